"""The built-in plugin ``downstream``: protsteps' own finetune heads (``mlp``, ``linear``),
label formats (``manifest``, ``protfunct``, ``deeploc``), metrics (``accuracy``,
``macro_f1``, ``fmax``, ``micro_aupr``), embeddings writers (``npz``, ``parquet``,
``hdf5``) and the ``protsteps embeddings`` command, registered through the same hooks as a
third-party plugin's. The implementations live in :mod:`protsteps.downstream`, except the
``hdf5`` writer (:mod:`protsteps_downstream.hdf5`), which only this plugin knows."""
