"""HTTP controllers: thin (parse, call one use case, render)."""
