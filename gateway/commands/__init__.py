"""Sub-commands of ``coe``; each module's ``register`` adds one (or one group)."""
