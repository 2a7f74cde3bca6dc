"""The model layer alone: build a RAN, run it on a face, read its per-region attention.

python examples/quickstart.py
"""

import numpy as np
import timm
import torch

import ran  # noqa: F401  (registers the RAN models in timm)
from ran.data.synthetic import synthetic_face
from ran.labels import FERPLUS_CLASSES

model = timm.create_model("ran_resnet18", region_size=112).eval()  # random weights: no training here

face = synthetic_face("happiness", rng=0)  # a 48x48 grayscale face drawn by the package
pixels = torch.from_numpy(np.asarray(face.convert("RGB"), dtype=np.float32) / 255.0)
images = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, 3, 48, 48), values 0..1 as in the original

with torch.inference_mode():
    out = model.forward_with_attention(images)

probs = out.logits.softmax(-1)[0]
print("prediction:", FERPLUS_CLASSES[int(probs.argmax())], f"({float(probs.max()):.2f}, untrained)")
for box, alpha, weight in zip(model.boxes, out.alpha[0], out.weights[0]):
    region = tuple(round(v, 3) for v in box)
    print(f"region {region}: self-attention {alpha:.4f}, share of pooled feature {weight:.4f}")
