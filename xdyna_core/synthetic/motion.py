"""Procedural dance (``Choreography``) and the 3-D kinematics of a synthetic person.

World frame: X to the image right, Y up, Z towards the camera; the floor is Y = 0 and the
camera is orthographic. A body frame has x = the person's LEFT, y = up, z = the way they face,
so at yaw 0 the person faces the camera and their right side is on the image's left (as in a
real video; OpenPose "r_*" points land on the image's left).

A performance is an endless sequence of *moves* (2-4 s each, cross-faded): each move is a set
of sinusoids on joint angles locked to the music's tempo, with step-touch / march footwork,
knee bounces, arm waves, torso twists and turns. A move's parameters come from
``(seed, move index)`` only, so any time t of a performance is a pure function of the seed.
Legs use two-bone inverse kinematics so the feet stay planted while the hips bounce and sway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import bilinear, lfilter, lfilter_zi

TAU = 2 * np.pi
DEG = np.pi / 180


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


# ---- rotations (vectorised over time) -----------------------------------------------------------

def rot_x(a):
    a = np.asarray(a, np.float64)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def rot_y(a):
    a = np.asarray(a, np.float64)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def rot_z(a):
    a = np.asarray(a, np.float64)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def apply(R, v):
    """R [N,3,3] @ v ([3] or [N,3]) -> [N,3]."""
    v = np.asarray(v, np.float64)
    if v.ndim == 1:
        return R @ v
    return np.einsum("nij,nj->ni", R, v)


def normalize(v, eps=1e-9):
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + eps)


def rodrigues(v, axis, angle):
    """Rotate vectors v [N,3] about unit axes [N,3] by angles [N]."""
    a = np.asarray(angle, np.float64)[..., None]
    return v * np.cos(a) + np.cross(axis, v) * np.sin(a) + axis * (axis * v).sum(-1, keepdims=True) * (1 - np.cos(a))


# ---- choreography ---------------------------------------------------------------------------------

# Arm styles: (abduction, flexion, elbow, elbow-bend direction) base values and swing amplitudes,
# in degrees. Abduction raises the arm sideways, flexion forwards; the bend direction turns the
# elbow's bending plane from forwards (0) to upwards (90).
ARM_STYLES = {
    "swing": dict(abd=(12, 8), flex=(10, 35), elbow=(35, 25), bend=(10, 10)),
    "wave": dict(abd=(80, 25), flex=(10, 15), elbow=(40, 35), bend=(80, 15)),
    "raise": dict(abd=(150, 20), flex=(15, 15), elbow=(25, 20), bend=(70, 10)),
    "pump": dict(abd=(60, 20), flex=(40, 30), elbow=(100, 30), bend=(60, 20)),
    "clap": dict(abd=(25, 10), flex=(70, 20), elbow=(60, 30), bend=(30, 10)),
    "point": dict(abd=(125, 30), flex=(20, 20), elbow=(10, 10), bend=(40, 10)),
    "sway": dict(abd=(35, 25), flex=(25, 20), elbow=(45, 25), bend=(45, 20)),
}
ARM_STYLE_NAMES = tuple(ARM_STYLES)
FOOTWORK = ("sway", "step_touch", "march", "bounce", "kick")


@dataclass
class Choreography:
    """A sampled dance: tempo, move length, style weights and the facial performance.

    Moves themselves are drawn lazily from ``(seed, move index)`` (see ``move``)."""

    seed: int
    tempo: float          # beats per second
    move_beats: int       # beats per move
    fade: float           # cross-fade between moves (s)
    energy: float         # overall amplitude 0.4..1.2
    turn: float           # how much the dancer turns (yaw amplitude, rad)
    blink_rate: float     # blinks per second
    talkiness: float      # how much the mouth moves (singing along)
    smile_bias: float
    phase: float          # time offset into the endless performance (s)

    @classmethod
    def sample(cls, seed: int) -> "Choreography":
        r = _rng(seed, 0xC0)
        return cls(
            seed=int(seed),
            tempo=float(r.uniform(1.4, 2.4)),
            move_beats=int(r.choice([4, 6, 8])),
            fade=float(r.uniform(0.35, 0.7)),
            energy=float(r.uniform(0.55, 1.15)),
            turn=float(r.uniform(0.0, 45.0) * DEG),
            blink_rate=float(r.uniform(0.15, 0.45)),
            talkiness=float(r.uniform(0.0, 1.0)),
            smile_bias=float(r.uniform(-0.2, 0.8)),
            phase=float(r.uniform(0.0, 60.0)),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def move_len(self) -> float:
        return self.move_beats / self.tempo

    def move(self, k: int) -> dict:
        """Parameters of move number k (any integer)."""
        r = _rng(self.seed, 0x30E, k)
        e = self.energy
        arm = ARM_STYLE_NAMES[r.integers(len(ARM_STYLE_NAMES))]
        mirrored = bool(r.random() < 0.55)  # both arms do the same (vs. alternate)
        arms = []
        for side in range(2):
            st = ARM_STYLES[arm if (mirrored or side == 0 or r.random() < 0.5) else ARM_STYLE_NAMES[r.integers(len(ARM_STYLE_NAMES))]]
            p = {}
            for name, (base, amp) in st.items():
                p[name] = ((base + r.normal(0, 8)) * DEG, (amp * e * r.uniform(0.6, 1.3)) * DEG)
            p["harm"] = float(r.choice([0.5, 1.0, 1.0, 2.0]))
            p["phase"] = float(r.uniform(0, TAU))
            p["lag"] = float(r.uniform(0.3, 1.4))  # elbow phase lag behind the shoulder: a wave
            p["curl"] = (float(r.uniform(0.0, 0.7)), float(r.uniform(0.0, 0.4)))
            arms.append(p)
        if mirrored:
            arms[1]["phase"] = arms[0]["phase"] + (0.0 if r.random() < 0.6 else np.pi)
        foot = FOOTWORK[r.integers(len(FOOTWORK))]
        return dict(
            arms=arms,
            foot=foot,
            step=float(r.uniform(0.05, 0.11) * e) if foot == "step_touch" else 0.0,
            march=float(r.uniform(0.04, 0.09) * e) if foot == "march" else 0.0,
            kick=float(r.uniform(0.1, 0.22) * e) if foot == "kick" else 0.0,
            bounce=float(r.uniform(0.01, 0.03 if foot != "bounce" else 0.07) * e),
            stance=float(r.uniform(0.13, 0.24)),
            sway=float(r.uniform(0.0, 0.04) * e),
            lean=float(r.uniform(0, 8) * e * DEG),
            twist=float(r.uniform(0, 20) * e * DEG),
            side_bend=float(r.uniform(0, 10) * e * DEG),
            fwd_bend=(float(r.uniform(-3, 8) * DEG), float(r.uniform(0, 6) * e * DEG)),
            yaw=(float(r.uniform(-1, 1) * self.turn), float(r.uniform(0.2, 1.0) * self.turn)),
            head=(float(r.uniform(0, 15) * e * DEG), float(r.uniform(0, 10) * e * DEG), float(r.uniform(0, 12) * e * DEG)),
            phases=r.uniform(0, TAU, size=8),
            travel=float(r.uniform(-0.05, 0.05)),
        )

    # -- evaluation --
    def angles(self, t) -> dict:
        """Every motion channel at times t [N] (seconds): a dict of arrays."""
        t = np.asarray(t, np.float64) + self.phase
        L = self.move_len
        k = np.floor(t / L).astype(np.int64)
        local = t - k * L
        # weight of the next move inside the last `fade` seconds of a move (smoothstep)
        w = np.clip((local - (L - self.fade)) / self.fade, 0.0, 1.0)
        w = w * w * (3 - 2 * w)
        out = None
        for kk in np.unique(np.concatenate([k, k + 1])):
            weight = np.where(k == kk, 1.0 - w, 0.0) + np.where(k + 1 == kk, w, 0.0)
            sel = np.nonzero(weight > 0)[0]
            if len(sel) == 0:
                continue
            ch = self._move_channels(self.move(int(kk)), t[sel])  # only where this move shows
            if out is None:
                out = {n: np.zeros((len(t),) + v.shape[1:]) for n, v in ch.items()}
            for n, v in ch.items():
                out[n][sel] += v * (weight[sel] if v.ndim == 1 else weight[sel, None])
        out.update(self._face_channels(t))
        return out

    def _move_channels(self, m: dict, t) -> dict:
        beat = TAU * self.tempo * t          # one beat = 2π
        cyc = beat / 2                        # a two-beat body cycle
        ph = m["phases"]
        ch = {}
        # footwork: per-foot lateral offset, lift and forward kick
        s = lambda x: np.tanh(2.5 * np.sin(x)) / np.tanh(2.5)  # noqa: E731 smooth square wave
        ds = lambda x: np.abs(np.cos(x)) * (np.abs(np.sin(x)) < 0.75)  # noqa: E731 moving phase
        foot_x = np.zeros((len(t), 2))
        foot_y = np.zeros((len(t), 2))
        foot_z = np.zeros((len(t), 2))
        if m["step"]:
            for i, lag in enumerate((0.0, 0.9)):
                foot_x[:, i] = m["step"] * s(cyc - lag)
                foot_y[:, i] = 0.05 * ds(cyc - lag) * (m["step"] / 0.1)
        if m["march"]:
            for i in range(2):
                foot_y[:, i] = m["march"] * np.maximum(0.0, np.sin(beat / 2 + np.pi * i)) ** 2
                foot_z[:, i] = 0.3 * foot_y[:, i]
        if m["kick"]:
            kick_phase = np.maximum(0.0, np.sin(cyc / 2 + ph[0])) ** 4
            side = int(ph[1] > np.pi)
            foot_z[:, side] = m["kick"] * kick_phase
            foot_y[:, side] = 0.5 * m["kick"] * kick_phase
        ch["foot_x"], ch["foot_y"], ch["foot_z"] = foot_x, foot_y, foot_z
        ch["stance"] = np.full(len(t), m["stance"])
        ch["sway"] = m["sway"] * np.sin(cyc + ph[2]) + m["travel"]
        ch["bounce"] = m["bounce"] * (0.5 + 0.5 * np.cos(beat))  # down on every beat
        ch["lean"] = m["lean"] * np.sin(cyc + ph[3])
        ch["twist"] = m["twist"] * np.sin(cyc + ph[4])
        ch["side_bend"] = m["side_bend"] * np.sin(cyc + ph[5])
        ch["fwd_bend"] = m["fwd_bend"][0] + m["fwd_bend"][1] * np.sin(beat + ph[6])
        ch["yaw"] = m["yaw"][0] + m["yaw"][1] * np.sin(cyc / 2 + ph[7])
        hy, hp, hr = m["head"]
        ch["head_yaw"] = hy * np.sin(cyc + ph[0])
        ch["head_pitch"] = 0.04 + hp * np.sin(beat + ph[1])
        ch["head_roll"] = hr * np.sin(cyc + ph[2])
        for side, a in zip(("r", "l"), m["arms"]):
            x = a["harm"] * cyc + a["phase"]
            for name in ("abd", "flex", "bend"):
                base, amp = a[name]
                ch[f"{side}_{name}"] = base + amp * np.sin(x)
            base, amp = a["elbow"]
            ch[f"{side}_elbow"] = np.clip(base + amp * np.sin(x - a["lag"]), 0.0, 150 * DEG)
            c0, c1 = a["curl"]
            ch[f"{side}_curl"] = np.clip(c0 + c1 * np.sin(x + 1.0), 0.0, 1.0)
        return ch

    def _face_channels(self, t) -> dict:
        # blinks: in every 1-s slot a blink happens with probability blink_rate, at a random offset
        slot = np.floor(t).astype(np.int64)
        eye = np.ones(len(t))
        for s in np.unique(np.concatenate([slot - 1, slot])):
            r = _rng(self.seed, 0xB1, s)
            if r.random() < self.blink_rate:
                tc = s + r.uniform(0, 1)
                eye = np.minimum(eye, np.clip(np.abs(t - tc) / 0.09, 0.0, 1.0) ** 1.5)
        # mouth: syllables at the beat and half-beat, with a slow envelope
        beat = TAU * self.tempo * t
        r = _rng(self.seed, 0xF4)
        p = r.uniform(0, TAU, size=4)
        env = np.clip(0.5 + 0.8 * np.sin(0.37 * t + p[0]), 0, 1) * self.talkiness
        mouth = env * np.clip(0.6 * np.sin(beat + p[1]) + 0.4 * np.sin(2.3 * beat + p[2]), 0, 1)
        smile = np.clip(self.smile_bias + 0.5 * np.sin(0.45 * t + p[3]), -0.3, 1.0)
        brow = 0.5 * np.sin(0.8 * t + p[0] * 2) * (0.3 + 0.7 * self.talkiness) + 0.3 * mouth
        gaze = np.stack([0.35 * np.sin(0.6 * t + p[2]), 0.15 * np.sin(0.9 * t + p[1])], 1)
        return dict(eye_open=eye, mouth_open=mouth, smile=smile, brow=brow, gaze=gaze)


# ---- body kinematics --------------------------------------------------------------------------

def two_bone_ik(hip, target, l1, l2, pole):
    """Knee and reachable ankle for a hip [N,3], ankle target [N,3], bone lengths and a pole
    direction [N,3] the knee bends towards (law of cosines in the plane hip-target-pole)."""
    d = target - hip
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    reach = np.clip(dist, 0.25 * (l1 + l2), (l1 + l2) * 0.9995)
    u = d / np.maximum(dist, 1e-9)
    ankle = hip + u * reach
    a = (l1 * l1 - l2 * l2 + reach * reach) / (2 * reach)
    h = np.sqrt(np.maximum(l1 * l1 - a * a, 0.0))
    p = normalize(pole - u * (pole * u).sum(-1, keepdims=True))
    return hip + u * a + p * h, ankle


def body_pose(ch, geo, times) -> dict:
    """3-D joints of a character with geometry ``geo`` (a Character) for motion channels ``ch``.

    Returns world-space arrays [N, 3] (and a few [N, k, 3]) plus the rotations the renderer
    needs (``R_root``, ``R_chest``, ``R_head`` [N, 3, 3])."""
    n = len(times)
    g = geo
    leg = g.thigh + g.shin
    # feet: planted around a stance that turns with part of the body's yaw
    foot_yaw = 0.6 * ch["yaw"]
    R_feet = rot_y(foot_yaw)
    stance = ch["stance"] * g.height
    foot_base = np.zeros((n, 2, 3))
    feet = np.zeros((n, 2, 3))
    for i, side in enumerate((-1.0, 1.0)):  # right foot, left foot
        local = np.stack([side * stance / 2, np.zeros(n), np.zeros(n)], 1)
        foot_base[:, i] = apply(R_feet, local)
        feet[:, i] = foot_base[:, i] + np.stack([ch["foot_x"][:, i] * g.height, g.ankle_h + ch["foot_y"][:, i] * g.height,
                                                 ch["foot_z"][:, i] * g.height], 1)
    planted = feet.copy()
    planted[:, :, 1] = g.ankle_h
    centre = planted.mean(1)
    # hips: between the feet, swaying, bouncing down on the beat
    R_root = rot_z(ch["lean"]) @ rot_y(ch["yaw"])
    pelvis_h = g.ankle_h + 0.975 * leg + 0.01 * g.height - ch["bounce"] * g.height
    pelvis = np.stack([centre[:, 0] + ch["sway"] * g.height, pelvis_h, centre[:, 2]], 1)
    hips = np.stack([pelvis + apply(R_root, [s * g.hip_w / 2, -0.035 * g.height, 0.0]) for s in (-1.0, 1.0)], 1)
    # a hip that cannot reach its foot pulls the pelvis down (keeps the feet on the floor)
    need = np.maximum(np.linalg.norm(hips - planted, axis=-1) - 0.995 * leg, 0.0).max(1)
    pelvis[:, 1] -= need
    hips[:, :, 1] -= need[:, None]
    fwd_feet = apply(R_feet, [0.0, 0.0, 1.0])
    knees = np.zeros_like(feet)
    ankles = np.zeros_like(feet)
    for i, side in enumerate((-1.0, 1.0)):
        pole = fwd_feet + apply(R_feet, [side * 0.25, 0.0, 0.0])
        knees[:, i], ankles[:, i] = two_bone_ik(hips[:, i], feet[:, i], g.thigh, g.shin, pole)
    fwd = fwd_feet[:, None]
    toes = ankles + g.foot_len * (0.85 * fwd + np.array([0.0, -0.45, 0.0]))
    toes[:, :, 1] = np.maximum(toes[:, :, 1], 0.008 * g.height)
    heels = ankles + g.foot_len * (-0.2 * fwd + np.array([0.0, -0.35, 0.0]))
    # spine in two segments, the bend split between them
    tw, sb, fb = ch["twist"], ch["side_bend"], ch["fwd_bend"]
    R_mid = R_root @ rot_y(tw / 2) @ rot_z(sb / 2) @ rot_x(fb / 2)
    R_chest = R_root @ rot_y(tw) @ rot_z(sb) @ rot_x(fb)
    waist = pelvis + apply(R_mid, [0.0, 0.45 * g.torso_len, 0.0])
    neck_base = waist + apply(R_chest, [0.0, 0.55 * g.torso_len, 0.0])
    shoulders = np.stack([neck_base + apply(R_chest, [s * g.shoulder_w / 2, -0.03 * g.height, -0.005]) for s in (-1.0, 1.0)], 1)
    # head and neck
    R_head = R_chest @ rot_y(ch["head_yaw"]) @ rot_x(ch["head_pitch"]) @ rot_z(ch["head_roll"])
    R_neck = R_chest @ rot_y(ch["head_yaw"] / 2) @ rot_x(ch["head_pitch"] / 2) @ rot_z(ch["head_roll"] / 2)
    neck_top = neck_base + apply(R_neck, [0.0, g.neck_len, 0.004])
    hu = g.head_unit
    head = neck_top + apply(R_head, [0.0, 0.8 * hu, 0.3 * hu])  # origin of the face template
    # arms: abduction sideways, flexion forwards, then the elbow bends in a plane turned by "bend"
    elbows = np.zeros((n, 2, 3))
    wrists = np.zeros((n, 2, 3))
    hand_dirs = np.zeros((n, 2, 3))
    for i, (side, s) in enumerate((("r", -1.0), ("l", 1.0))):
        a, f = ch[f"{side}_abd"], ch[f"{side}_flex"]
        d_local = np.stack([s * np.sin(a), -np.cos(a) * np.cos(f), np.cos(a) * np.sin(f)], 1)
        d = apply(R_chest, d_local)
        bend = ch[f"{side}_bend"]
        w_local = np.stack([-s * 0.25 * np.ones(n), np.sin(bend), np.cos(bend)], 1)
        w = apply(R_chest, w_local)
        axis = np.cross(d, w)
        bad = np.linalg.norm(axis, axis=-1) < 1e-3
        axis[bad] = np.cross(d[bad], apply(R_chest[bad], [0.0, 0.0, 1.0]) + 1e-3)
        axis = normalize(axis)
        fore = rodrigues(d, axis, ch[f"{side}_elbow"])
        elbows[:, i] = shoulders[:, i] + d * g.upper_arm
        wrists[:, i] = elbows[:, i] + fore * g.forearm
        hand_dirs[:, i] = normalize(rodrigues(fore, axis, 0.25 * ch[f"{side}_elbow"] * 0.3))
    return dict(
        R_root=R_root, R_chest=R_chest, R_head=R_head,
        pelvis=pelvis, waist=waist, neck_base=neck_base, neck_top=neck_top, head=head,
        shoulders=shoulders, elbows=elbows, wrists=wrists, hand_dirs=hand_dirs,
        hips=hips, knees=knees, ankles=ankles, toes=toes, heels=heels,
    )


# ---- hands -----------------------------------------------------------------------------------

# Per finger: MCP position (along, across) in hand lengths, phalanx lengths, spread direction.
_FINGERS = (
    ((0.44, 0.13), (0.20, 0.13, 0.10), 0.22),   # index
    ((0.46, 0.03), (0.22, 0.15, 0.11), 0.05),   # middle
    ((0.44, -0.07), (0.21, 0.14, 0.10), -0.12),  # ring
    ((0.40, -0.16), (0.16, 0.11, 0.09), -0.30),  # pinky
)


def hand_points(wrist, direction, curl, hand_len, side: float):
    """21 hand points [N, 21, 3] (wrist, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky
    17-20) for a hand at ``wrist`` pointing along ``direction``; ``curl`` 0 = open, 1 = fist.
    The palm faces the camera as much as it can, thumb towards ``side`` (+1 image right)."""
    n = len(wrist)
    d = normalize(direction)
    view = np.array([0.0, 0.0, 1.0])
    lat = np.cross(np.broadcast_to(view, d.shape), d)
    weak = np.linalg.norm(lat, axis=-1, keepdims=True)
    lat = normalize(lat + (weak < 0.2) * np.array([1.0, 0.0, 0.0]) * 0.3)
    # keep the thumb on the same image side whatever way the hand points
    flip = np.sign((lat[:, 0:1] * side) + 1e-6)
    lat = lat * flip
    normal = normalize(np.cross(d, lat))
    pts = np.zeros((n, 21, 3))
    pts[:, 0] = wrist
    c = np.asarray(curl, np.float64)[:, None]
    h = hand_len
    # thumb: out to the side, folding across the palm as the hand closes
    base = wrist + h * (0.10 * d + 0.12 * lat)
    tdir = normalize(d * 0.7 + lat * 0.75)
    pts[:, 1] = base
    p = base
    for j, seg in enumerate((0.17, 0.14, 0.11)):
        tdir = normalize(tdir * np.cos(0.5 * c) + (-lat * 0.6 + normal * 0.8) * np.sin(0.5 * c))
        p = p + h * seg * tdir
        pts[:, 2 + j] = p
    for fi, ((al, ac), segs, spread) in enumerate(_FINGERS):
        mcp = wrist + h * (al * d + ac * lat)
        fdir = normalize(d + spread * (1.0 - 0.7 * c) * lat)
        pts[:, 5 + 4 * fi] = mcp
        p = mcp
        for j, seg in enumerate(segs):
            ang = c * (0.9, 1.3, 0.9)[j]
            fdir = normalize(fdir * np.cos(ang) + normal * np.sin(ang))
            p = p + h * seg * fdir
            pts[:, 6 + 4 * fi + j] = p
    return pts


# ---- secondary dynamics ------------------------------------------------------------------------

SIM_RATE = 60.0   # Hz: a fixed grid so a state at time t never depends on the clip's fps
SIM_START = -3.0  # s before the performance's t=0: the hair settles before anything is shown


def spring_filter(rest: np.ndarray, freq: float, damping: float) -> np.ndarray:
    """Damped spring x'' = ω²(r − x) − 2ζω x' following a rest trajectory r(t) sampled at
    ``SIM_RATE`` along axis 0 (a linear 2nd-order low-pass, discretised with the bilinear
    transform); starts at rest. This is the "hair/cloth follows the body's velocity" lag."""

    w = TAU * freq
    b, a = bilinear([w * w], [1.0, 2 * damping * w, w * w], fs=SIM_RATE)
    shape = rest.shape
    flat = rest.reshape(shape[0], -1)
    zi = lfilter_zi(b, a)[:, None] * flat[0][None, :]
    out, _ = lfilter(b, a, flat, axis=0, zi=zi)
    return out.reshape(shape)


def sim_grid(t_max: float) -> np.ndarray:
    n = int(np.ceil((t_max - SIM_START) * SIM_RATE)) + 2
    return SIM_START + np.arange(n) / SIM_RATE


def chains(anchor, offsets, freq, damping):
    """Chains of damped springs hanging from ``anchor`` [N, K, 3] (N time samples on the sim
    grid, K chains); ``offsets`` [N, K, J, 3] are the rest offsets of each link from the previous
    node (gravity + style). Each node follows its rest position through ``spring_filter``, then
    the link length is restored so strands swing instead of stretching. Returns [N, K, J+1, 3]."""
    N, K, J, _ = offsets.shape
    out = np.zeros((N, K, J + 1, 3))
    out[:, :, 0] = anchor
    prev = anchor
    for j in range(J):
        rest = prev + offsets[:, :, j]
        x = spring_filter(rest, freq * (1.0 + 0.25 * j), damping)
        length = np.linalg.norm(offsets[:, :, j], axis=-1, keepdims=True)
        x = prev + normalize(x - prev) * length
        out[:, :, j + 1] = x
        prev = x
    return out


def interp_time(t_grid, values, t):
    """Linear interpolation of grid samples [N, ...] at times t [M] -> [M, ...]."""
    pos = (np.asarray(t, np.float64) - t_grid[0]) * SIM_RATE
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(t_grid) - 2)
    f = np.clip(pos - i0, 0.0, 1.0).reshape((-1,) + (1,) * (values.ndim - 1))
    return values[i0] * (1 - f) + values[i0 + 1] * f
