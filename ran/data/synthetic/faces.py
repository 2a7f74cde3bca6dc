"""Drawing one procedurally generated FERPlus-style face: the pictures of ``ran.data.synthetic.generator``.

48x48 grayscale faces whose eight FERPlus expression classes differ in mouth, brows and eyes, turned by a
head pose (occluders, lighting and noise are added in ``ran.data.synthetic.generator``). Faces are drawn
with PIL
at 4x and box-downsampled (antialiasing). Each feature point lives on a rough head ellipsoid, so yaw moves
the nose and the far eye the way a turned head does, instead of only squeezing the picture. Every random
choice comes from the generator passed in, in a fixed order, so one stream always draws the same face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ran.labels import FERPLUS_CLASSES

IMAGE_SIZE = 48
SUPERSAMPLE = 4

CLEAN, POSED, OCCLUDED = 0, 1, 2  # how a face is shown (Condition.kind)


@dataclass(frozen=True)
class _Expression:
    """Shape parameters of one expression in face units (u: face half-width, v: face half-height)."""

    eye_open: float  # half-height of the eye opening
    brow_raise: float  # gap between brow and eye centre line
    brow_slant: float  # lift of the inner brow end over the outer end (+ worried, - angry)
    mouth_width: float  # half-width of the mouth
    mouth_curve: float  # lift of both mouth corners (+ smile, - frown)
    mouth_open: float  # gap between the lips
    upper_share: float  # share of the opening taken by the upper lip (round O: 0.5, smile: small)
    smirk: float  # lift and pull of one mouth corner only
    sneer: float  # raise of the upper lip on one side
    furrow: float  # vertical lines between the brows
    wrinkle: float  # wrinkles on the nose bridge
    lip_press: float  # thinner, darker lip line


# One entry per FERPLUS_CLASSES name, in that order.
_EXPRESSIONS: dict[str, _Expression] = {
    "neutral": _Expression(0.075, 0.17, 0.00, 0.24, 0.00, 0.00, 0.5, 0.00, 0.00, 0.0, 0.0, 0.0),
    "happiness": _Expression(0.052, 0.18, 0.00, 0.33, 0.12, 0.07, 0.2, 0.00, 0.00, 0.0, 0.0, 0.0),
    "surprise": _Expression(0.125, 0.30, 0.00, 0.14, 0.00, 0.26, 0.5, 0.00, 0.00, 0.0, 0.0, 0.0),
    "sadness": _Expression(0.060, 0.19, 0.09, 0.23, -0.10, 0.00, 0.5, 0.00, 0.00, 0.0, 0.0, 0.0),
    "anger": _Expression(0.058, 0.09, -0.11, 0.20, -0.03, 0.00, 0.5, 0.00, 0.00, 1.0, 0.0, 1.0),
    "disgust": _Expression(0.038, 0.12, -0.04, 0.24, -0.04, 0.03, 0.8, 0.00, 0.09, 0.0, 1.0, 0.0),
    "fear": _Expression(0.120, 0.26, 0.07, 0.31, -0.03, 0.11, 0.4, 0.00, 0.00, 0.0, 0.0, 0.0),
    "contempt": _Expression(0.070, 0.17, 0.00, 0.25, 0.00, 0.00, 0.5, 0.11, 0.00, 0.0, 0.0, 0.0),
}
_NEUTRAL = _EXPRESSIONS["neutral"]
_PARAM_JITTER = _Expression(0.010, 0.022, 0.018, 0.022, 0.018, 0.015, 0.05, 0.012, 0.012, 0.2, 0.2, 0.2)


@dataclass(frozen=True)
class Condition:
    """How a face is shown: head pose in degrees and the occluder, if any."""

    kind: int = CLEAN
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    occlusion_type: int | None = None
    occluder_scale: float = 1.0


class HeadProjection:
    """Maps face coordinates (u right, v down, both in [-1, 1] on the face ellipse) to canvas pixels.

    The face is a cap of a head sphere of radius ``HEAD_RADIUS`` (face units, squashed in depth by
    ``depth``); a point on it (plus ``dz`` for the nose) is turned by yaw and pitch, rotated in-plane by
    roll and placed at the face centre. So yaw slides the features and the nose sideways and squeezes
    the far cheek, as a turning head does, instead of only shearing the picture.
    """

    HEAD_RADIUS = 1.15

    def __init__(self, cx: float, cy: float, a: float, b: float, condition: Condition, depth: float):
        self.cx, self.cy, self.a, self.b, self.depth = cx, cy, a, b, depth
        self.sin_yaw, self.cos_yaw = (
            math.sin(math.radians(condition.yaw)),
            math.cos(math.radians(condition.yaw)),
        )
        self.sin_pitch = math.sin(math.radians(condition.pitch))
        self.sin_roll, self.cos_roll = (
            math.sin(math.radians(condition.roll)),
            math.cos(math.radians(condition.roll)),
        )
        # Half-width of the head silhouette relative to its frontal half-width.
        self.silhouette = math.sqrt(self.cos_yaw**2 + (depth * self.sin_yaw) ** 2)

    def _turn(self, u: np.ndarray, v: np.ndarray, dz: float | np.ndarray) -> tuple[np.ndarray, ...]:
        u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        z = (np.sqrt(np.maximum(self.HEAD_RADIUS**2 - u * u - v * v, 0.0)) + dz) * self.depth
        x = self.a * (u * self.cos_yaw + z * self.sin_yaw)
        y = self.b * v - self.a * z * self.sin_pitch
        facing = z * self.cos_yaw - u * self.sin_yaw  # < 0: turned behind the silhouette
        return x, y, facing, v

    def points(self, u: np.ndarray, v: np.ndarray, dz: float | np.ndarray = 0.0) -> list[tuple[float, float]]:
        x, y, _, _ = self._turn(u, v, dz)
        return self._place(x, y)

    def outline(self, u: np.ndarray, v: np.ndarray) -> list[tuple[float, float]]:
        """Like ``points``, but a face edge turned out of sight lies on the head silhouette instead."""
        x, y, facing, v = self._turn(u, v, 0.0)
        edge = math.copysign(1.0, self.sin_yaw) * self.a * self.silhouette
        edge = edge * np.sqrt(np.maximum(self.HEAD_RADIUS**2 - v * v, 0.0))
        return self._place(np.where(facing < 0, edge, x), y)

    def flat(self, x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        """Pixel offsets from the face centre (before roll), for shapes not on the face surface."""
        return self._place(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def _place(self, x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        xr = x * self.cos_roll - y * self.sin_roll + self.cx
        yr = x * self.sin_roll + y * self.cos_roll + self.cy
        return list(zip((xr * SUPERSAMPLE).tolist(), (yr * SUPERSAMPLE).tolist()))


def _sample_expression(label: int, rng: np.random.Generator) -> _Expression:
    """The class prototype pulled towards neutral by a random intensity, plus per-parameter jitter."""
    target = _EXPRESSIONS[FERPLUS_CLASSES[label]]
    intensity = rng.uniform(0.55, 1.2)
    values = []
    for name in _Expression.__dataclass_fields__:
        base, full, jitter = getattr(_NEUTRAL, name), getattr(target, name), getattr(_PARAM_JITTER, name)
        values.append(base + intensity * (full - base) + rng.normal(0.0, jitter))
    expression = _Expression(*values)
    return _Expression(
        eye_open=max(expression.eye_open, 0.018),
        brow_raise=max(expression.brow_raise, 0.05),
        brow_slant=expression.brow_slant,
        mouth_width=max(expression.mouth_width, 0.1),
        mouth_curve=expression.mouth_curve,
        mouth_open=max(expression.mouth_open, 0.0),
        upper_share=float(np.clip(expression.upper_share, 0.1, 0.9)),
        smirk=max(expression.smirk, 0.0),
        sneer=max(expression.sneer, 0.0),
        furrow=max(expression.furrow, 0.0),
        wrinkle=max(expression.wrinkle, 0.0),
        lip_press=float(np.clip(expression.lip_press, 0.0, 1.0)),
    )


def _shade(level: float) -> int:
    return min(max(round(float(level)), 0), 255)


# Sample positions reused by every drawing (np.linspace per face costs more than the drawing).
_CIRCLE_40 = np.linspace(0, 2 * np.pi, 40, endpoint=False)
_CIRCLE_16 = np.linspace(0, 2 * np.pi, 16, endpoint=False)
_SPAN_11, _SPAN_17, _SPAN_21 = np.linspace(-1, 1, 11), np.linspace(-1, 1, 17), np.linspace(-1, 1, 21)
_TOP_ARC_17 = np.linspace(0, -np.pi, 17)
_BROW_T = np.linspace(0, 1, 7)


@dataclass
class _Sketch:
    """One face being drawn: the canvas, its head projection and the shades and shape it was given."""

    canvas: Image.Image
    draw: ImageDraw.ImageDraw
    head: HeadProjection
    expression: _Expression
    skin: float
    ink: float  # brows, lid lines
    a: float  # face half-width (pixels)
    b: float  # face half-height (pixels)


def _start_face(label: int, rng: np.random.Generator, condition: Condition) -> tuple[_Sketch, float, float]:
    """Expression, face size and place, background and skin; returns the sketch, the hair shade and which
    side a one-sided expression uses."""
    expression = _sample_expression(label, rng)
    side = 1.0 if rng.random() < 0.5 else -1.0
    size = IMAGE_SIZE * SUPERSAMPLE
    a = rng.uniform(14.5, 18.0)
    b = a * rng.uniform(1.18, 1.34)
    cx, cy = IMAGE_SIZE / 2 + rng.normal(0, 1.2), IMAGE_SIZE / 2 + 1.5 + rng.normal(0, 1.2)
    head = HeadProjection(cx, cy, a, b, condition, depth=rng.uniform(0.8, 0.95))
    background = rng.uniform(30, 215)
    skin = rng.uniform(115, 220)
    if abs(skin - background) < 25:
        background = skin - 60 if skin > 140 else skin + 60
    hair = rng.uniform(10, 90) if rng.random() < 0.8 else rng.uniform(150, 210)
    ink = skin - rng.uniform(75, 115)
    canvas = Image.new("L", (size, size), _shade(background))
    sketch = _Sketch(canvas, ImageDraw.Draw(canvas), head, expression, skin, ink, a, b)
    return sketch, hair, side


def _draw_head(face: _Sketch, hair: float, rng: np.random.Generator) -> None:
    """Head (hair) behind the face, the neck, the face, then the hair over the forehead."""
    draw, head, a, b = face.draw, face.head, face.a, face.b
    theta = _CIRCLE_40
    head_half_width = a * head.HEAD_RADIUS * head.silhouette * 1.03
    draw.polygon(
        head.flat(head_half_width * np.cos(theta), b * (1.14 * np.sin(theta) - 0.1)), fill=_shade(hair)
    )
    neck_x = np.array([-0.5, 0.5, 0.55, -0.55]) * a
    draw.polygon(head.flat(neck_x, np.array([0.5, 0.5, 1.9, 1.9]) * b), fill=_shade(face.skin - 30))
    draw.polygon(head.outline(np.cos(theta), np.sin(theta)), fill=_shade(face.skin))
    hairline = rng.uniform(-0.72, -0.6)
    fringe_u = _SPAN_17
    fringe_v = np.maximum(
        hairline + 0.06 * np.cos(fringe_u * 3 + rng.uniform(0, 6)), -np.sqrt(1 - fringe_u**2)
    )
    top = _TOP_ARC_17  # back over the top of the face, from u = 1 to u = -1
    draw.polygon(
        head.outline(np.concatenate([fringe_u, np.cos(top)]), np.concatenate([fringe_v, np.sin(top)])),
        fill=_shade(hair),
    )


def _draw_brows(face: _Sketch, eye_v: float, rng: np.random.Generator) -> None:
    """Brows: inner end lifted by the slant, slight arch; furrows between them for anger."""
    expression, px = face.expression, SUPERSAMPLE
    brow_width = rng.uniform(0.9, 1.5) * px
    for eye_side in (-1.0, 1.0):
        t = _BROW_T  # 0 inner, 1 outer
        brow_u = eye_side * (0.1 + t * 0.5) + rng.normal(0, 0.01)
        brow_v = (
            eye_v
            - expression.eye_open
            - expression.brow_raise
            - expression.brow_slant * (1 - t)
            - 0.04 * np.sin(np.pi * t)
        )
        face.draw.line(
            face.head.points(brow_u, brow_v),
            fill=_shade(face.ink),
            width=max(1, round(brow_width)),
            joint="curve",
        )
    if expression.furrow > 0.3:
        for furrow_u in (-0.05, 0.05):
            top = eye_v - expression.brow_raise - 0.02
            face.draw.line(
                face.head.points(np.array([furrow_u, furrow_u * 0.6]), np.array([top - 0.1, top + 0.05])),
                fill=_shade(face.skin - 45 * min(expression.furrow, 1.5)),
                width=px,
            )


def _draw_eyes(
    face: _Sketch, eye_v: float, eye_u: float, eye_half_width: float, rng: np.random.Generator
) -> None:
    """Eyes: almond white, iris squashed by the lids, dark upper lid line."""
    expression, head, s = face.expression, face.head, _SPAN_11
    gaze = rng.normal(0, 0.02)
    iris_radius = rng.uniform(0.05, 0.07)
    for eye_side in (-1.0, 1.0):
        centre = eye_side * eye_u
        upper = eye_v - expression.eye_open * (1 - s**2) ** 0.8
        lower = eye_v + 0.75 * expression.eye_open * (1 - s**2) ** 0.8
        eye_u_points = centre + s * eye_half_width
        outline = head.points(
            np.concatenate([eye_u_points, eye_u_points[::-1]]), np.concatenate([upper, lower[::-1]])
        )
        face.draw.polygon(outline, fill=_shade(min(face.skin + 25, 250)))
        iris_half_height = min(iris_radius * face.a / face.b, expression.eye_open * 0.95)
        face.draw.polygon(
            head.points(
                centre + gaze + iris_radius * np.cos(_CIRCLE_16),
                eye_v - 0.1 * expression.eye_open + iris_half_height * np.sin(_CIRCLE_16),
            ),
            fill=_shade(face.skin - 130),
        )
        face.draw.line(
            head.points(eye_u_points, upper),
            fill=_shade(face.ink - 10),
            width=round(1.1 * SUPERSAMPLE),
            joint="curve",
        )


def _draw_nose(face: _Sketch, rng: np.random.Generator) -> None:
    """Nose: bridge line and nostrils, standing out of the face so yaw shifts them; wrinkles for disgust."""
    draw, head, px = face.draw, face.head, SUPERSAMPLE
    nose_v = rng.uniform(0.2, 0.27)
    nose_shade = _shade(face.skin - rng.uniform(35, 55))
    draw.line(
        head.points(np.array([0.0, 0.02, 0.05]), np.array([-0.05, 0.1, nose_v]), np.array([0.1, 0.25, 0.35])),
        fill=nose_shade,
        width=px,
    )
    for nostril in (-1.0, 1.0):
        draw.line(
            head.points(np.array([nostril * 0.03, nostril * 0.1]), np.array([nose_v + 0.03, nose_v]), 0.15),
            fill=nose_shade,
            width=px,
        )
    if face.expression.wrinkle > 0.3:
        for wrinkle_v in (-0.02, 0.04):
            draw.line(
                head.points(
                    np.array([-0.09, 0.0, 0.09]), np.array([wrinkle_v, wrinkle_v - 0.02, wrinkle_v]), 0.12
                ),
                fill=_shade(face.skin - 40 * min(face.expression.wrinkle, 1.5)),
                width=px,
            )


def _draw_mouth(face: _Sketch, side: float, rng: np.random.Generator) -> float:
    """Mouth: a centre curve whose corners lift (smile) or drop (frown), one corner alone for a smirk, the
    upper lip raised on one side for a sneer, and an opening split between upper and lower lip. Returns
    its height, where a mouth occluder goes."""
    draw, head, expression, skin, px = face.draw, face.head, face.expression, face.skin, SUPERSAMPLE
    mouth_v = rng.uniform(0.48, 0.56)
    mouth_s = _SPAN_21
    one_side = np.clip(side * mouth_s, 0, None)  # 0 on the other half, 1 at the smirking corner
    half_width = expression.mouth_width + 0.4 * expression.smirk * one_side
    mouth_u = mouth_s * half_width + rng.normal(0, 0.01)
    centre_v = mouth_v - expression.mouth_curve * mouth_s**2 - expression.smirk * one_side**2
    opening = expression.mouth_open * (1 - mouth_s**2) ** (0.5 if expression.upper_share > 0.42 else 0.9)
    sneer = expression.sneer * np.exp(-(((mouth_s - side * 0.45) / 0.35) ** 2))
    upper_v = centre_v - expression.upper_share * opening - sneer
    lower_v = centre_v + (1 - expression.upper_share) * opening
    lip_shade = _shade(skin - rng.uniform(45, 70) - 40 * expression.lip_press)
    lip_width = max(1, round((rng.uniform(0.9, 1.3) - 0.3 * expression.lip_press) * px))
    if float(np.max(lower_v - upper_v)) > 0.02:
        draw.polygon(
            head.points(np.concatenate([mouth_u, mouth_u[::-1]]), np.concatenate([upper_v, lower_v[::-1]])),
            fill=_shade(skin - 150),
        )
        if expression.upper_share < 0.3 and expression.mouth_open > 0.04:  # smiling teeth
            teeth_v = upper_v + 0.45 * (lower_v - upper_v)
            draw.polygon(
                head.points(
                    np.concatenate([mouth_u, mouth_u[::-1]]), np.concatenate([upper_v, teeth_v[::-1]])
                ),
                fill=_shade(min(skin + 20, 245)),
            )
        draw.line(head.points(mouth_u, upper_v), fill=lip_shade, width=lip_width, joint="curve")
        draw.line(head.points(mouth_u, lower_v), fill=lip_shade, width=lip_width, joint="curve")
    else:
        draw.line(
            head.points(mouth_u, centre_v - sneer), fill=lip_shade, width=lip_width + px // 2, joint="curve"
        )
    # Lower-lip shadow gives the mouth some body.
    draw.line(
        head.points(mouth_u[4:-4] * 0.8, lower_v[4:-4] + 0.07),
        fill=_shade(skin - 22),
        width=px,
        joint="curve",
    )
    return mouth_v


def draw_face(label: int, rng: np.random.Generator, condition: Condition) -> tuple[Image.Image, dict]:
    """Draws one face at SUPERSAMPLE x size; returns the canvas and the anchors an occluder needs."""
    face, hair, side = _start_face(label, rng, condition)
    _draw_head(face, hair, rng)
    eye_v = rng.uniform(-0.16, -0.08)
    eye_u = rng.uniform(0.33, 0.4)
    eye_half_width = rng.uniform(0.14, 0.17)
    _draw_brows(face, eye_v, rng)
    _draw_eyes(face, eye_v, eye_u, eye_half_width, rng)
    _draw_nose(face, rng)
    mouth_v = _draw_mouth(face, side, rng)
    return face.canvas, {"head": face.head, "eye_v": eye_v, "mouth_v": mouth_v, "side": side}
