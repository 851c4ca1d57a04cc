"""Framework adapters (verl, OpenRLHF). Each imports its framework lazily; the core never imports them."""
