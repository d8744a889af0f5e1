"""Many devices and hosts through JAX's own SPMD (DESIGN §7): a `Mesh` with a data and an FSDP
axis (`mesh.py`), and `jax.distributed` start-up for several processes (`distributed.py`)."""
