"""Training for vaecodec: the float twin of the codec's model, the training loop and the export to a
weights file. It lives beside ``bench/`` in a checkout, outside the ``vaecodec`` package and its
wheel: the runtime never imports it, and it imports only the runtime's public modules (the
transforms, the integer networks' layer specifications and constants, the two-pass coding order,
the weights file).

Run from the repository root::

    python -m training --run-dir runs/hp --steps 20000            # train (resumes if runs/hp exists)
    torchrun --nproc_per_node 8 -m training --run-dir runs/hp     # the same on 8 GPUs (or CPU procs)
    python -m training --run-dir runs/hp --export runs/hp.safetensors   # export the latest checkpoint
    python -m training --run-dir runs/ft --init hp128cbpf-v5 --steps 2000   # fine-tune a shipped model

``python -m training --help`` lists every flag. The data is ``--data``, else ``$VAECODEC_DATA``,
else ``../shared/data`` beside the checkout (folders ``train/`` and ``kodak/``). The runs that made
the shipped weights, with their commands, are in docs/training.md.

Modules: :mod:`training.model` (the trainable model and its loss), :mod:`training.prior` (the float
h_s, context model and z density, and their integer export), :mod:`training.data` (crops, pack),
:mod:`training.loop` (the loop, EMA, checkpoints, DDP), :mod:`training.export` (weights file <->
trainable model) and :mod:`training.__main__` (the command line).
"""
