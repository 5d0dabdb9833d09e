"""Built-in protsteps plugin: Pretext tasks of STEPS: pairwise distance bins and masked dihedral angles."""
