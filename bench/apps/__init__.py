"""Worker-side modules: what each system's own worker machinery imports and runs."""
