"""Built-in protsteps plugin: Structure files to residue graphs: the residue_graph featurizer."""
