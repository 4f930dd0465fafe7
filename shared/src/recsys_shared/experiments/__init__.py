"""Online experiments between model versions: who sees which variant, the statistics that
decide, and where experiments are kept (used by the gateway, which runs them, and by the
recommenders, which load their versions)."""
