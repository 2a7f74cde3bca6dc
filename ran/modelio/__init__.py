"""Model input/output: everything that reads or writes a model, in one place.

- ``loading``: one loader (``ran.load_model``) for a model folder, a training checkpoint, a Hub id or a name
- ``folder``: a model folder's files checked before anything is read (config, safetensors header, no pickles)
- ``hub``: writing a model folder and pushing it (``ran.save_pretrained``, ``ran.push_to_hub``)
- ``card``: the model card written beside the weights
- ``checkpoints``: a training checkpoint (model files plus optimizer, scheduler and progress) written and read
- ``state_dict``: a bare weights file (safetensors, or a tensors-only ``torch.load(weights_only=True)``)
- ``convert``: the original authors' checkpoints into a model folder (``ran convert``)

Nothing is imported here, so ``import ran.modelio.folder`` does not pull in the Hub client.
"""
