"""One module per schedule family; `schedules._registry` lists them."""
