"""Built-in protsteps plugin: Encoders: the paper's GIN and an E(3)-equivariant encoder on e3nn."""
