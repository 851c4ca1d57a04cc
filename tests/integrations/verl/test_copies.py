"""The reward formulation's data in the ``rac`` trainer, through verl's own dataset, dataloader and fetch:
corrupted copies made on the fly (the default ``corruption.source=generate``), the pair sampler across a
resume, the training step the format warm-up reads, and validation per corruption level."""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from verl.trainer.ppo.reward import get_custom_reward_fn

import hydra_config
from rac_losses.corruption import CorruptionPolicy, corrupt
from rac_losses.corruption.pairs import build_pairs, image_key
from rac_losses.integrations.paper_settings import PaperSettings
from rac_losses.integrations.verl.trainer import RACTrainer
from rac_losses.metrics import calibration_summary

KINDS = "IITIITII"  # 6 image prompts and 2 text prompts


def _png(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _image_parquet(path, kinds: str = KINDS, name: str = "train.parquet") -> tuple[str, list[bytes | None]]:
    """verl's layout: ``<image>`` in the prompt text, the images' bytes in an ``images`` column."""
    images = [_png(i) if k == "I" else None for i, k in enumerate(kinds)]
    table = pa.table({
        "prompt": [[{"role": "user", "content": ("<image>" if img else "") + f"question {i}"}] for i, img in enumerate(images)],
        "images": [[{"bytes": img, "path": None}] if img else [] for img in images],
        "data_source": ["x"] * len(kinds), "reward_model": [{"ground_truth": "A"}] * len(kinds),
        "extra_info": [{"index": i} for i in range(len(kinds))],
    })
    pq.write_table(table, path / name)
    return str(path / name), images


def _trainer(files: str, *overrides: str, val: str | None = None) -> RACTrainer:
    from tiny_vl_processor import tiny_vl_processor

    config = hydra_config.compose_ppo(
        "trainer.v1.trainer_mode=rac", f"data.train_files={files}", f"data.val_files={val or files}",
        "data.train_batch_size=4", "data.filter_overlong_prompts=false", "data.dataloader_num_workers=0",
        "trainer.total_epochs=2", *overrides,
    )
    trainer = RACTrainer(config)
    trainer.processor = tiny_vl_processor()  # verl's dataset needs one for image prompts
    trainer.tokenizer = trainer.processor.tokenizer
    trainer._init_dataloader()
    trainer.global_steps = 1  # verl's checkpoint loading sets it before the first fetch
    return trainer


def _rows(batch) -> list[tuple[int, bool, float, list]]:
    return list(zip(list(batch["pair_id"]), list(batch["is_noisy"]), list(batch["corruption_level"]),
                    list(batch["raw_prompt"])))


def _image_of(messages: list) -> np.ndarray:
    items = [it for m in messages if isinstance(m["content"], list) for it in m["content"] if it["type"] == "image"]
    assert len(items) == 1
    return np.asarray(items[0]["image"].convert("RGB"))


def _question(messages: list) -> str:
    return "".join(it["text"] for it in messages[0]["content"] if it["type"] == "text") \
        if isinstance(messages[0]["content"], list) else messages[0]["content"]


def test_each_image_prompt_is_followed_by_its_corrupted_copy_in_the_same_batch(tmp_path):
    files, images = _image_parquet(tmp_path)
    trainer = _trainer(files)
    # what rac-corrupt pairs writes for the same images and seed, one file per severity
    build_pairs(files, tmp_path / "pairs", severities=(1, 2, 3), mix=None, workers=0, progress=False)
    written = {s: pq.read_table(tmp_path / "pairs" / f"train_pair_T{s / 5:.1f}.parquet").to_pylist() for s in (1, 2, 3)}

    seen_copies = set()
    for _ in range(2 * trainer.steps_per_epoch):  # two epochs, through verl's own fetch
        batch = trainer._fetch_one_gen_batch()
        rows = _rows(batch)
        assert len(rows) == 4 and len({str(u) for u in batch["uid"]}) == 4  # a copy has its own uid
        for pair, noisy, level, messages in rows:
            question = int(re.search(r"question (\d+)", _question(messages)).group(1))
            if pair < 0:  # a prompt without copy: the text prompts only (fraction 1)
                assert KINDS[question] == "T" and not noisy and level == 0.0
                continue
            assert pair == question and KINDS[question] == "I"
            partner = [r for r in rows if r[0] == pair and r[1] != noisy]
            assert len(partner) == 1, "a clean prompt and its copy share the batch"
            original = np.asarray(Image.open(io.BytesIO(images[pair])).convert("RGB"))
            if not noisy:
                assert level == 0.0 and np.array_equal(_image_of(messages), original)
                continue
            severity = round(level * 5)
            assert severity in (1, 2, 3)  # the paper's levels 0.2 / 0.4 / 0.6
            name, drawn, seed = CorruptionPolicy.paper().choose(image_key([images[pair]]))
            assert drawn == severity
            same = written[severity][2 * pair + 1]  # the written file: clean row, then its noisy copy
            assert (same["source_row"], same["is_noisy"], same["corruption"], same["corruption_seed"]) == (pair, True, name, seed)
            assert np.array_equal(_image_of(messages), np.asarray(Image.open(io.BytesIO(same["images"][0]["bytes"])).convert("RGB")))
            assert not np.array_equal(_image_of(messages), original)
            seen_copies.add(pair)
    assert seen_copies == {i for i, k in enumerate(KINDS) if k == "I"}


def test_the_copies_count_in_verls_steps_and_validation_gets_none(tmp_path):
    files, _ = _image_parquet(tmp_path)
    trainer = _trainer(files)
    rows = len(KINDS) + KINDS.count("I")
    assert len(trainer.train_dataset) == rows and trainer.train_dataset.copies == KINDS.count("I")
    assert trainer.steps_per_epoch == rows // 4 and trainer.total_training_steps == 2 * (rows // 4)
    assert trainer.config.actor_rollout_ref.actor.optim.total_training_steps == 2 * (rows // 4)
    assert len(trainer.val_dataset) == len(KINDS)  # the validation set as given
    plain = _trainer(files, "+rac.corruption.source=off")
    assert len(plain.train_dataset) == len(KINDS) and plain.steps_per_epoch == len(KINDS) // 4


def test_a_fraction_of_the_image_prompts_gets_copies_chosen_by_their_images(tmp_path):
    kinds = "I" * 16
    files, images = _image_parquet(tmp_path, kinds)
    trainer = _trainer(files, "+rac.corruption.fraction=0.5", "+rac.corruption.seed=3")
    policy = PaperSettings(fraction=0.5, seed=3).policy
    want = {i for i, img in enumerate(images) if policy.selects(image_key([img]))}
    assert 0 < len(want) < 16 and trainer.train_dataset.copies == len(want)
    assert {p for p in trainer.train_dataset.pair_ids if p >= 0} == want
    for _ in range(trainer.steps_per_epoch):
        rows = _rows(trainer._fetch_one_gen_batch())
        pairs = [p for p, *_ in rows if p >= 0]
        assert all(pairs.count(p) == 2 for p in pairs)  # whole pairs; unpaired prompts fill the rest
    again = _trainer(files, "+rac.corruption.fraction=0.5", "+rac.corruption.seed=3")
    assert again.train_dataset.pair_ids == trainer.train_dataset.pair_ids  # a pure function of images and seed


def test_copies_of_images_named_in_the_messages(tmp_path):
    paths = []
    for i in range(2):
        (tmp_path / f"{i}.png").write_bytes(_png(10 + i))
        paths.append(f"file://{tmp_path / f'{i}.png'}")
    # the second prompt names its image twice: one corrupted image for both items
    contents = [[{"type": "image", "image": paths[0]}, {"type": "text", "text": "question 0"}],
                [{"type": "image", "image": paths[1]}, {"type": "text", "text": "question 1"},
                 {"type": "image", "image": paths[1]}]]
    table = pa.table({
        "prompt": [[{"role": "user", "content": c}] for c in contents] * 2,  # 4 rows: a batch of copies
        "data_source": ["x"] * 4, "reward_model": [{"ground_truth": "A"}] * 4,
    })
    pq.write_table(table, tmp_path / "messages.parquet")
    trainer = _trainer(str(tmp_path / "messages.parquet"), "+rac.schema=false", "data.train_batch_size=2")
    assert trainer.train_dataset.layout.kind == "messages" and trainer.train_dataset.copies == 4
    copy = trainer.train_dataset[3]  # row 1's copy
    assert copy["is_noisy"] and copy["pair_id"] == 1
    items = [it for it in copy["raw_prompt"][0]["content"] if it["type"] == "image"]
    data = (tmp_path / "1.png").read_bytes()
    name, severity, seed = CorruptionPolicy.paper().choose(image_key([data]))
    want = np.asarray(corrupt(Image.open(io.BytesIO(data)), name, severity, seed=seed))
    assert len(items) == 2 and all(np.array_equal(np.asarray(it["image"]), want) for it in items)
    assert copy["corruption_level"] == severity / 5
    assert trainer.train_dataset[2]["raw_prompt"][0]["content"][0]["image"] == paths[1]  # the clean row: as given


def test_generating_copies_of_a_paired_dataset_is_refused(tmp_path):
    files, _ = _image_parquet(tmp_path)
    table = pq.read_table(files)
    n = table.num_rows
    table = table.append_column("pair_id", pa.array(list(range(n)))).append_column(
        "is_noisy", pa.array([False] * n)).append_column("corruption_level", pa.array([0.0] * n))
    pq.write_table(table, tmp_path / "paired.parquet")
    with pytest.raises(ValueError, match=r"the training set has a pair_id column .*set \+rac.corruption.source=dataset"):
        _trainer(str(tmp_path / "paired.parquet"))
    _trainer(str(tmp_path / "paired.parquet"), "+rac.corruption.source=dataset")


def _fetch(trainer, steps: int) -> list[list[tuple[int, bool]]]:
    return [[(p, n) for p, n, *_ in _rows(trainer._fetch_one_gen_batch())] for _ in range(steps)]


def test_a_resumed_run_continues_the_epoch_in_its_order(tmp_path):
    files, _ = _image_parquet(tmp_path)
    trainer = _trainer(files)
    _fetch(trainer, trainer.steps_per_epoch + 1)  # into the second epoch
    state = trainer.train_dataloader.state_dict()  # what verl's checkpoint saves
    ahead = _fetch(trainer, 4)

    resumed = _trainer(files)
    resumed.train_dataloader.load_state_dict(state)  # what verl's resume loads
    assert _fetch(resumed, 4) == ahead
    first = _fetch(_trainer(files), 4)
    assert first != ahead  # the second epoch's order is not the first's


def test_the_format_warm_up_reads_the_step_verl_trains_the_prompts_in(tmp_path):
    files, _ = _image_parquet(tmp_path)
    trainer = _trainer(files)
    score = get_custom_reward_fn(trainer.config)  # what verl's reward loop calls
    off_schema = "<think>t</think>A<confidence>0.8</confidence>"  # no <answer> tag: the format penalty
    for step, penalty in ((1, 1.0 + (0.3 - 1.0) * 0.1), (7, 1.0 + (0.3 - 1.0) * 0.7), (12, 0.3)):
        trainer.global_steps = step
        infos = list(trainer._fetch_one_gen_batch()["extra_info"])
        assert [info["global_steps"] for info in infos] == [step] * 4
        assert "index" in infos[0]  # the dataset's own extra info is kept
        assert score("x", off_schema, "A", infos[0])["score_raw"] == pytest.approx(-penalty)


def test_validation_reports_each_corruption_level(tmp_path):
    files, _ = _image_parquet(tmp_path)
    val = pq.read_table(files).append_column("corruption_level", pa.array([0.0, 0.4] * 4))
    pq.write_table(val, tmp_path / "val.parquet")
    trainer = _trainer(files, "data.validation_shuffle=false", val=str(tmp_path / "val.parquet"))
    score = get_custom_reward_fn(trainer.config)
    batches = list(trainer.val_dataloader)
    infos = [info for b in batches for info in b["extra_info"]]
    assert [info["corruption_level"] for info in infos] == [0.0, 0.4] * 4 and "index" in infos[0]
    right = "<think>t</think><answer>A</answer><confidence>0.8</confidence>"
    assert score("x", right, "A", infos[1])["corruption_level"] == 0.4  # the default reward returns it

    # verl's validation metrics input: one response per prompt, with the reward's extra info
    conf, acc = [0.9, 0.6, 0.2, 0.7, 0.8, 0.3, 0.4, 0.9], [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    reward_infos = {"acc": acc, "confidence": conf, "corruption_level": [0.0, 0.4] * 4}
    sources = ["a"] * 4 + ["b"] * 4
    got = trainer._val_metrics_update(sources, [str(i) for i in range(8)], reward_infos, [1] * 8)
    for group, rows in (("a@clean", [0, 2]), ("a@T0.4", [1, 3]), ("all@T0.4", [1, 3, 5, 7]), ("b", [4, 5, 6, 7])):
        c, a = (torch.tensor([x[i] for i in rows], dtype=torch.float64) for x in (conf, acc))
        for k, v in calibration_summary(c, a).items():
            assert got[f"val-rac/{group}/{k}"] == pytest.approx(v), (group, k)
        assert got[f"val-rac/{group}/accuracy"] == pytest.approx(float(a.mean()))
    clean_only = {**reward_infos, "corruption_level": [None] * 8}
    got = trainer._val_metrics_update(sources, [str(i) for i in range(8)], clean_only, [1] * 8)
    assert not any("@" in k for k in got if k.startswith("val-rac/")) and "val-rac/a/ece" in got
    assert all(type(v) is float for k, v in got.items() if k.startswith("val-rac/"))  # what loggers take


def test_copies_need_verls_kind_of_dataset():
    from rac_losses.integrations.verl.copies import CorruptedCopies

    with pytest.raises(ValueError, match=r"needs verl's RLHFDataset .* the training set is a list"):
        CorruptedCopies(list(range(4)), CorruptionPolicy.paper())


def test_copies_follow_verls_filtered_rows(tmp_path):
    """verl's length filter (``data.filter_overlong_prompts``) leaves the dataframe with an index mapping: the
    copies' images must come from the rows that remain."""
    from verl.trainer.ppo.utils import create_rl_dataset

    from rac_losses.integrations.verl.copies import CorruptedCopies

    files, images = _image_parquet(tmp_path)
    trainer = _trainer(files)
    dataset = create_rl_dataset(files, trainer.config.data, trainer.tokenizer, trainer.processor)
    dataset.dataframe = dataset.dataframe.filter(lambda row: row["extra_info"]["index"] not in (0, 3))  # as verl filters
    copies = CorruptedCopies(dataset, CorruptionPolicy.paper())
    kept = [i for i in range(len(KINDS)) if i not in (0, 3)]
    assert copies.copies == sum(KINDS[i] == "I" for i in kept)
    for index in range(len(copies)):
        item = copies[index]
        source = item["extra_info"]["index"]  # the row of the original file
        assert source in kept
        if item["is_noisy"]:
            name, severity, seed = CorruptionPolicy.paper().choose(image_key([images[source]]))
            want = corrupt(Image.open(io.BytesIO(images[source])), name, severity, seed=seed)
            assert np.array_equal(_image_of(item["raw_prompt"]), np.asarray(want.convert("RGB")))
            assert item["pair_id"] == kept.index(source)  # the row of the filtered dataset
