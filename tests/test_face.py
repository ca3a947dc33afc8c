"""S-Face patches: the official construction in numbers, and landmarks on real photographs."""

import cv2
import numpy as np
import pytest

from xdyna_core.errors import InputError
from xdyna_core.preprocess.face import face_box, face_patches, get_face_landmarker, local_centres


def synthetic_face(x0=200.0, y0=300.0, w=80.0, h=100.0):
    """68 points spread over a box, with the eye / mouth groups at known places."""
    rng = np.random.default_rng(1)
    lm = np.stack([rng.uniform(x0, x0 + w, 68), rng.uniform(y0, y0 + h, 68)], 1)
    lm[0] = (x0, y0 + 10)  # extent corners
    lm[16] = (x0 + w, y0 + 10)
    lm[8] = (x0 + w / 2, y0 + h)
    lm[19] = (x0 + 20, y0)
    lm[36:42] = (x0 + 20, y0 + 35)  # right eye
    lm[42:48] = (x0 + 60, y0 + 35)  # left eye
    lm[48:68] = (x0 + 40, y0 + 75)  # mouth
    return lm


def test_box_numbers_follow_official_formula():
    lm = synthetic_face()
    H, W = 896, 512
    # extent 200..280 x 300..400 -> centre (240, 350), L = 100
    assert face_box(lm, H, W) == (int(240 - 135), int(350 - 125), int(240 + 135), int(350 + 145))
    # truncation toward zero (not floor) on the negative side, then clamping
    lm2 = synthetic_face(x0=10.0, y0=5.0)
    cx, cy, L = 50.0, 55.0, 100.0
    raw = (int(cx - 1.35 * L), int(cy - 1.25 * L), int(cx + 1.35 * L), int(cy + 1.45 * L))
    assert raw == (-85, -70, 185, 200)
    assert face_box(lm2, H, W) == (0, 0, 185, 200)
    assert face_box(synthetic_face(x0=480.0, y0=850.0), H, W)[2:] == (W, H)


def test_patches_content_exactly():
    H, W = 896, 512
    rng = np.random.default_rng(0)
    img = rng.integers(1, 256, (H, W, 3), dtype=np.uint8)  # no zero pixels: black means "not copied"
    lm = synthetic_face()
    out, found = face_patches(img, lm)
    assert found and out.shape == (H, W, 6) and out.dtype == np.uint8
    x0, y0, x1, y1 = face_box(lm, H, W)
    glob = out[..., 3:]
    assert (glob[y0:y1, x0:x1] == img[y0:y1, x0:x1]).all()
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    assert not glob[~mask].any()
    # local: rectangles of half size (int(w/8), int(h/8)) round the official centres
    hx, hy = int((x1 - x0) / 8), int((y1 - y0) / 8)
    assert (hx, hy) == (33, 33)
    centres = local_centres(lm)
    # official groups skip the first point of each range: 43-47, 37-41, 49-67
    assert tuple(centres[0]) == (260, 335) and tuple(centres[1]) == (220, 335) and tuple(centres[2]) == (240, 375)
    lmask = np.zeros((H, W), bool)
    for cx, cy in centres:
        lmask[cy - hy:cy + hy, cx - hx:cx + hx] = True
    loc = out[..., :3]
    assert (loc[lmask] == img[lmask]).all()
    assert not loc[~lmask].any()


def test_skipped_first_points_matter():
    lm = synthetic_face()
    lm[42] = (0, 0)  # first point of the left eye group: ignored by the official ranges
    lm[36] = (0, 0)
    lm[48] = (0, 0)
    c = local_centres(lm)
    assert tuple(c[0]) == (260, 335) and tuple(c[1]) == (220, 335) and tuple(c[2]) == (240, 375)


def test_no_wraparound_near_the_border():
    H, W = 256, 256
    img = np.full((H, W, 3), 200, np.uint8)
    lm = synthetic_face(x0=-30.0, y0=-60.0, w=60.0, h=70.0)  # face cut by the top-left corner
    out, found = face_patches(img, lm)
    assert found
    # extent x -30..30, y -60..15 -> L = 75, centre (0, -22.5) -> box clamped to (0, 0, 101, 86)
    assert face_box(lm, H, W) == (0, 0, 101, 86)
    # half sizes (12, 10). Eyes at y = -25: the official slice [-35:-15] wraps to rows 221..240;
    # clamped it is empty. Mouth at (10, 15): official cols [-2:22] are empty; clamped 0..21.
    loc = out[..., :3]
    assert not loc[100:].any()
    assert loc[10, 0].all() and loc[10, 21].all() and not loc[10, 22].any()


def test_no_face_gives_blank_and_flag():
    img = np.full((64, 48, 3), 255, np.uint8)
    out, found = face_patches(img, None)
    assert not found and out.shape == (64, 48, 6) and not out.any()
    lm = np.concatenate([synthetic_face(5, 5, 30, 30), np.zeros((68, 1))], 1)  # confidence 0
    out, found = face_patches(img, lm)
    assert not found and not out.any()
    with pytest.raises(InputError):
        face_patches(img, np.zeros((5, 2)))


# ---- real photographs (scikit-image astronaut, matplotlib's Grace Hopper) ------------------------
def haar_face(img):
    c = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = c.detectMultiScale(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(40, 40))
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return x, y, x + w, y + h


def grow(b, f):
    cx, cy, w, h = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]
    return cx - w * f / 2, cy - h * f / 2, cx + w * f / 2, cy + h * f / 2


def inside(p, b):
    return (p[:, 0] >= b[0]).all() and (p[:, 0] <= b[2]).all() and (p[:, 1] >= b[1]).all() and (p[:, 1] <= b[3]).all()


@pytest.fixture(scope="module")
def photos():
    """Real photographs shipped inside installed packages."""
    import matplotlib.cbook
    import skimage.data

    hopper = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return {"astronaut": skimage.data.astronaut(), "grace_hopper": np.ascontiguousarray(hopper[..., ::-1])}


@pytest.fixture(scope="module")
def landmarker():
    return get_face_landmarker("mediapipe")


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_embedded_landmarks_on_real_photos(name, landmarker, photos):
    img = photos[name]
    lm = landmarker(img)
    assert lm is not None and lm.shape == (68, 3)
    haar = haar_face(img)  # an independent detector
    assert inside(lm[27:68, :2], grow(haar, 1.2))  # nose, eyes, mouth inside the Haar box (+20 %)
    assert inside(lm[:, :2], grow(haar, 1.8))
    eyes_y = lm[36:48, 1].mean()
    assert eyes_y < lm[27:36, 1].mean() < lm[48:68, 1].mean() < lm[8, 1]  # eyes, nose, mouth, chin
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # person's right eye on the image left
    assert lm[17:27, 1].mean() < eyes_y  # brows above the eyes
    out, found = face_patches(img, lm)
    assert found
    box = face_box(lm, *img.shape[:2])
    assert out[..., 3:].any() and out[..., :3].any()
    # local patch lies inside the global box and covers the eyes and the mouth
    ys, xs = np.nonzero(out[..., :3].any(2))
    assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1 and ys.max() <= box[3]
    for p in (lm[37:42, :2].mean(0), lm[43:48, :2].mean(0), lm[60:68, :2].mean(0)):
        assert out[int(p[1]), int(p[0]), :3].any()


def test_landmarker_choice():
    from xdyna_core.errors import MissingWeightsError
    from xdyna_core.preprocess.face import MediaPipeFaceLandmarker

    # face_alignment / insightface are optional; without them (or their weights) "auto" is the
    # embedded landmarker, and asking for them by name says what is missing
    try:
        import face_alignment  # noqa: F401
    except ImportError:
        assert isinstance(get_face_landmarker("auto"), MediaPipeFaceLandmarker)
        with pytest.raises(MissingWeightsError, match="face-alignment"):
            get_face_landmarker("face_alignment")
    with pytest.raises(InputError):
        get_face_landmarker("dlib")


def test_no_face_in_a_photo_without_people(landmarker):
    import skimage.data

    img = skimage.data.coffee()
    assert landmarker(img) is None
    out, found = face_patches(img, landmarker(img))
    assert not found and not out.any()
