"""The synthetic reasoning tasks, one generator each (mirroring the paper's figures).

Each generator draws on a G×G cell grid and returns every candidate answer as a video; the correct one
is the ground truth. In-domain and out-of-domain splits draw different parameter ranges.
"""
from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable

import numpy as np
import torch

from cos.tasks.base import COLORS, blank, register_task, rgb, timeline

PALETTE = ["red", "green", "blue", "yellow", "magenta", "cyan"]  # pairwise ≥ 1 apart in some channel


def paint(frame: torch.Tensor, cells, color: str | torch.Tensor) -> None:
    # Written through a numpy view of the (CPU) frame: the tasks paint ~300 cells per instance one call at a time,
    # and a torch indexed write per cell was 15 of 241 profiled seconds of the gpu tier on an H200 host (numpy's
    # is several times cheaper). Every cell gets the same colour, so repeated cells write the same value as before.
    cells = list(cells)
    if not cells:
        return
    c = _rgb(color) if isinstance(color, str) else color.numpy()
    if len(cells) == 1:         # most calls: a plain index is cheaper than numpy's fancy indexing
        (y, x), = cells
        frame.numpy()[:, y, x] = c
    else:
        ys, xs = zip(*cells)
        frame.numpy()[:, ys, xs] = c[:, None]


@functools.lru_cache(maxsize=None)
def _rgb(name: str) -> np.ndarray:
    c = rgb(name).numpy()
    c.setflags(write=False)     # shared by every paint
    return c


# Every frame at once: the generators painted one frame and one cell at a time (grounding, pattern, rotation and
# tictactoe ~10-17 ms an instance), most of the organism's instance drawing (1056 distinct draws on its gpu
# tier, ~13 s of host time with its forwards stubbed out on a 2-core VM). Each frame still gets its paints in the
# order it got them, and the colours the same float32 values: torch's `rgb(c) * t` rounds t to float32 first,
# as `_scaled` does.
def paint_frames(video: torch.Tensor, cells: Iterable[tuple[int, int]], color: str | np.ndarray) -> None:
    """`paint` on every frame of `video` (F, 3, G, G): one colour (a name or (3,)) or one per frame ((F, 3))."""
    cells = list(cells)
    if not cells:
        return
    c = _rgb(color) if isinstance(color, str) else color
    ys, xs = zip(*cells)
    video.numpy()[:, :, ys, xs] = c[..., None]


def _scaled(name: str, w: np.ndarray) -> np.ndarray:
    """(F, 3) float32: `rgb(name) * w_f` per frame, as torch computes it (w_f rounded to float32)."""
    return _rgb(name)[None, :] * w.astype(np.float32)[:, None]


def line_cells(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """Cells along the straight segment a → b, one per step of the longer axis."""
    n = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
    return [(round(a[0] + (b[0] - a[0]) * i / max(n, 1)), round(a[1] + (b[1] - a[1]) * i / max(n, 1))) for i in range(n + 1)]


def at(path: list, t: float):
    return path[int(round(t * (len(path) - 1)))]


def generic_masks(cands: torch.Tensor, answer: int) -> dict[str, torch.Tensor]:
    """target: where the right answer changes the scene; distractors: where only wrong answers do;
    background: black in every candidate frame and neither of those. All (F, G, G)."""
    static = cands[answer, :1]
    changed = (cands - static).abs().amax(dim=2) > 1e-6                 # (K, F, G, G)
    f = cands.shape[1]
    target = changed[answer].any(0, keepdim=True).expand(f, -1, -1)
    others = torch.cat([changed[:answer], changed[answer + 1:]]).any(0).any(0, keepdim=True).expand(f, -1, -1)
    distract = others & ~target
    black = (cands.abs().amax(dim=(0, 2)) < 1e-6)
    return {"target": target.clone(), "distractors": distract.clone(), "background": black & ~target & ~distract}


def out(prompt, cands, answer, params, masks=None, **extra):
    cands = torch.stack(cands) if isinstance(cands, list) else cands
    m = generic_masks(cands, answer)
    m.update(masks or {})
    return dict(prompt=prompt, candidates=cands, answer=answer, masks=m, params=params, **extra)


# ---------------------------------------------------------------- maze (Fig. 1, 2a)
def _maze(rng: np.random.Generator, rooms: int) -> np.ndarray:
    """Perfect maze by randomized DFS: open (True) cells on a (2r+1)² grid."""
    g = 2 * rooms + 1
    open_ = np.zeros((g, g), bool)
    seen = np.zeros((rooms, rooms), bool)
    stack = [(0, 0)]
    seen[0, 0] = True
    open_[1, 1] = True
    while stack:
        i, j = stack[-1]
        nbrs = [(i + di, j + dj) for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0))
                if 0 <= i + di < rooms and 0 <= j + dj < rooms and not seen[i + di, j + dj]]
        if not nbrs:
            stack.pop()
            continue
        ni, nj = nbrs[rng.integers(len(nbrs))]
        seen[ni, nj] = True
        open_[2 * ni + 1, 2 * nj + 1] = True
        open_[i + ni + 1, j + nj + 1] = True
        stack.append((ni, nj))
    return open_


def _bfs_path(open_: np.ndarray, a, b) -> list:
    prev = {a: None}
    q = deque([a])
    while q:
        c = q.popleft()
        if c == b:
            break
        for d in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            n = (c[0] + d[0], c[1] + d[1])
            if 0 <= n[0] < open_.shape[0] and 0 <= n[1] < open_.shape[1] and open_[n] and n not in prev:
                prev[n] = c
                q.append(n)
    path, c = [], b
    while c is not None:
        path.append(c)
        c = prev[c]
    return path[::-1]


def _maze_ends(rng, open_, rooms, split):
    room = lambda i, j: (2 * i + 1, 2 * j + 1)
    if split == "id":
        start, goal = room(0, 0), room(rooms - 1, rooms - 1)
    else:  # held out: start and goal elsewhere than the two corners
        while True:
            s, g = rng.integers(rooms, size=2), rng.integers(rooms, size=2)
            start, goal = room(*s), room(*g)
            if start != goal and {start, goal} != {room(0, 0), room(rooms - 1, rooms - 1)} and \
                    len(_bfs_path(open_, start, goal)) >= 5:
                break
    ends = []
    for i in range(rooms):
        for j in range(rooms):
            c = room(i, j)
            deg = sum(open_[c[0] + d[0], c[1] + d[1]] for d in ((0, 1), (1, 0), (0, -1), (-1, 0)))
            if c not in (start, goal) and deg == 1:
                ends.append(c)
    return start, goal, ends


@register_task("maze", "Spatiality", "move the white agent from the start to the red goal along the corridors, "
               "leaving a blue trail; candidates: the paths to every dead end")
def maze(rng, num_frames, split):
    rooms = 3
    while True:  # a maze with at least two dead ends off the solution gives at least three candidate paths
        open_ = _maze(rng, rooms)
        start, goal, ends = _maze_ends(rng, open_, rooms, split)
        if len(ends) >= 2:
            break
    rng.shuffle(ends)
    targets = [goal] + ends[:4]
    order = rng.permutation(len(targets))
    targets = [targets[k] for k in order]
    answer = int(np.where(order == 0)[0][0])
    walls = [(y, x) for y in range(open_.shape[0]) for x in range(open_.shape[1]) if not open_[y, x]]
    cands = []
    for tgt in targets:
        path = _bfs_path(open_, start, tgt)
        v = blank(open_.shape[0], num_frames)
        paint_frames(v, walls, "gray")
        paint_frames(v, [goal], "red")
        for f, t in enumerate(timeline(num_frames)):
            k = int(round(t * (len(path) - 1)))
            paint(v[f], path[:k], "blue")
            paint(v[f], [path[k]], "white")
        cands.append(v)
    true_path = _bfs_path(open_, start, goal)
    return out("move the white agent to the red goal along the corridors", cands, answer,
               {"rooms": rooms, "start": start, "goal": goal, "path_len": len(true_path)})


# ---------------------------------------------------------------- object to target (Fig. 2c)
@register_task("object_to_target", "Knowledge", "move the white square to the slot of the named colour "
               "among several coloured slots; candidates: every slot")
def object_to_target(rng, num_frames, split):
    g, k = 8, (3 if split == "id" else 4)
    rows = sorted(rng.choice(np.arange(0, g, 2), size=k, replace=False))
    colors = list(rng.choice(PALETTE, size=k, replace=False))
    start = (int(rng.integers(g)), 0)
    answer = int(rng.integers(k))
    slots = [(int(r), g - 1) for r in rows]
    cands = []
    for slot in slots:
        path = line_cells(start, slot)
        v = blank(g, num_frames)
        for s, c in zip(slots, colors):
            paint_frames(v, [s], c)
        for f, t in enumerate(timeline(num_frames)):
            paint(v[f], [at(path, t)], "white")
        cands.append(v)
    return out(f"move the white square to the {colors[answer]} slot", cands, answer,
               {"colors": colors, "slots": slots, "start": start})


# ---------------------------------------------------------------- grounding (Fig. 2d)
def _grounding_scene(rng, g, n, query):
    """n objects in distinct 3×3 slots of the grid; sizes 1 or 2; exactly one satisfies the query."""
    slots = [(y, x) for y in (0, 3, 6) for x in (0, 3, 6) if y + 2 <= g and x + 2 <= g]
    pos = [slots[i] for i in rng.choice(len(slots), size=n, replace=False)]
    colors = list(rng.choice(PALETTE, size=n, replace=False))
    ans = int(rng.integers(n))
    if query == "largest":
        sizes = [1] * n
        sizes[ans] = 2
    elif query == "smallest":
        sizes = [2] * n
        sizes[ans] = 1
    else:
        sizes = list(rng.integers(1, 3, size=n))
    return pos, colors, sizes, ans


def _grounding_videos(g, num_frames, pos, colors, sizes):
    t = timeline(num_frames)
    cands = []
    for target in range(len(pos)):
        v = blank(g, num_frames)
        for i, ((y, x), c, s) in enumerate(zip(pos, colors, sizes)):
            col = _scaled(c, 1 - t) + _scaled("white", t) if i == target else c
            paint_frames(v, [(y + a, x + b) for a in range(s) for b in range(s)], col)
        cands.append(v)
    return cands


@register_task("grounding", "Perception", "mark (turn white) the object that satisfies the query: the red one, "
               "the largest (held out: the smallest); candidates: every object. Carries the alternative "
               "configuration (the answer moved to another object) for the layer-swap claim")
def grounding(rng, num_frames, split):
    g = 8
    n = 3 if split == "id" else 4
    query = rng.choice(["color", "largest"]) if split == "id" else "smallest"
    pos, colors, sizes, ans = _grounding_scene(rng, g, n, query)
    if query == "color":
        prompt = f"mark the {colors[ans]} object"
    else:
        prompt = f"mark the {query} object"
    alt = int((ans + 1 + rng.integers(n - 1)) % n)
    # alternative configuration: swap the answer's distinguishing attribute with another object's
    a_colors, a_sizes = list(colors), list(sizes)
    if query == "color":
        a_colors[ans], a_colors[alt] = a_colors[alt], a_colors[ans]
    else:
        a_sizes[ans], a_sizes[alt] = a_sizes[alt], a_sizes[ans]
    alternative = out(prompt, _grounding_videos(g, num_frames, pos, a_colors, a_sizes), alt,
                      {"query": query, "colors": a_colors, "sizes": a_sizes, "positions": pos})
    return out(prompt, _grounding_videos(g, num_frames, pos, colors, sizes), ans,
               {"query": query, "colors": colors, "sizes": sizes, "positions": pos}, alternative=alternative)


# ---------------------------------------------------------------- pattern completion (Fig. 2e)
@register_task("pattern", "Abstraction", "a row of colours repeating with period p (held out: p = 4); fill in "
               "the missing last element; candidates: each colour of the row and one absent colour")
def pattern(rng, num_frames, split):
    g = 8
    p = int(rng.choice([2, 3])) if split == "id" else 4
    colors = list(rng.choice(PALETTE, size=p + 1, replace=False))
    row_colors, absent = colors[:p], colors[p]
    y = int(rng.integers(2, g - 3))
    answer_color = row_colors[(g - 1) % p]
    options = row_colors + [absent]
    order = list(rng.permutation(len(options)))
    options = [options[i] for i in order]
    answer = options.index(answer_color)
    t = timeline(num_frames)
    cands = []
    for opt in options:
        v = blank(g, num_frames)
        for x in range(g - 1):
            paint_frames(v, [(y, x), (y + 1, x)], row_colors[x % p])
        paint_frames(v, [(y, g - 1), (y + 1, g - 1)], _scaled(opt, t))
        cands.append(v)
    return out("complete the pattern", cands, answer, {"period": p, "row": row_colors, "options": options})


# ---------------------------------------------------------------- rotation (Fig. 2f)
L_SHAPE = [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2)]


def _rot(cells, k):
    for _ in range(k % 4):
        cells = [(x, 2 - y) for y, x in cells]  # 90° clockwise inside a 3×3 box
    return cells


@register_task("rotation", "Transformation", "rotate an L shape clockwise by the asked angle (90 or 180; held "
               "out: 270); candidates: the four orientations")
def rotation(rng, num_frames, split):
    g = 8
    k = int(rng.choice([1, 2])) if split == "id" else 3
    o0 = int(rng.integers(4))
    oy, ox = int(rng.integers(0, g - 3)), int(rng.integers(0, g - 3))
    color = str(rng.choice(PALETTE))
    shape = lambda o: [(oy + y, ox + x) for y, x in _rot(L_SHAPE, o)]
    t = timeline(num_frames)
    cands = []
    for o in range(4):
        v = blank(g, num_frames)
        paint_frames(v, shape(o0), _scaled(color, 1 - t))
        ys, xs = zip(*shape((o0 + o) % 4))
        v.numpy()[:, :, ys, xs] += _scaled(color, t)[..., None]     # a shape's cells are distinct: one add each
        cands.append(v)
    return out(f"rotate the shape {90 * k} degrees clockwise", cands, k, {"start_orientation": o0, "quarter_turns": k})


# ---------------------------------------------------------------- return to origin (Fig. 4a)
@register_task("return_to_origin", "Spatiality", "go to the green marker and come back to the start; candidates: "
               "come back, stay at the marker, go on to a decoy, come back half way")
def return_to_origin(rng, num_frames, split):
    g = 8
    while True:
        start, mark = tuple(rng.integers(g, size=2)), tuple(rng.integers(g, size=2))
        dist = max(abs(start[0] - mark[0]), abs(start[1] - mark[1]))
        axis = start[0] == mark[0] or start[1] == mark[1]
        if dist >= 4 and (axis if split == "id" else not axis):
            break
    start, mark = tuple(map(int, start)), tuple(map(int, mark))
    decoy = (int(np.clip(2 * mark[0] - start[0], 0, g - 1)), int(np.clip(2 * mark[1] - start[1], 0, g - 1)))
    if decoy == mark:
        decoy = (g - 1 - start[0], g - 1 - start[1])
    there = line_cells(start, mark)
    ends = {"back": start, "stay": mark, "decoy": decoy, "half": there[len(there) // 2]}
    cands = []
    for name in ("back", "stay", "decoy", "half"):
        back = line_cells(mark, ends[name])
        v = blank(g, num_frames)
        paint_frames(v, [mark], "green")
        for f, t in enumerate(timeline(num_frames)):
            pos = at(there, min(1.0, 2 * t)) if t <= 0.5 else at(back, 2 * t - 1)
            paint(v[f], [pos], "white")
        cands.append(v)
    anchor = torch.zeros(num_frames, g, g, dtype=torch.bool)
    anchor[:, start[0], start[1]] = True
    return out("go to the green marker and come back", cands, 0, {"start": start, "marker": mark, "decoy": decoy},
               masks={"anchor": anchor})


# ---------------------------------------------------------------- occlusion (Fig. 4b)
@register_task("occlusion", "Knowledge", "an object passes behind a grey occluder and must reappear intact; "
               "candidates: reappears in its own colour, in another colour, or not at all")
def occlusion(rng, num_frames, split):
    g = 8
    width = 1 if split == "id" else 2
    y = int(rng.integers(1, g - 1))
    while True:  # three linearly independent colours keep the candidate mixture identifiable
        colors = list(rng.choice(PALETTE, size=3, replace=False))
        if abs(np.linalg.det(np.array([COLORS[c] for c in colors]))) > 1e-6:
            break
    occl = [(r, c) for r in range(0, g) for c in (3, 4)]
    path = list(range(0, g - width + 1))
    endings = colors + [None]            # own colour first, then others, then vanished
    cands = []
    for end_color in endings:
        v = blank(g, num_frames)
        for f, t in enumerate(timeline(num_frames)):
            x = path[int(round(t * (len(path) - 1)))]
            past = x > 4
            c = colors[0] if not past else end_color
            if c is not None:
                paint(v[f], [(y, x + i) for i in range(width)], c)
        paint_frames(v, occl, "gray")       # over the object, in every frame
        cands.append(v)
    anchor = torch.zeros(num_frames, g, g, dtype=torch.bool)
    anchor[-1, y, path[-1]:path[-1] + width] = True
    return out(f"the {colors[0]} object moves behind the wall", cands, 0, {"color": colors[0], "row": y,
               "width": width}, masks={"anchor": anchor})


# ---------------------------------------------------------------- tic-tac-toe winning move (Fig. 2b)
LINES = [[(r, c) for c in range(3)] for r in range(3)] + [[(r, c) for r in range(3)] for c in range(3)] + \
        [[(i, i) for i in range(3)], [(i, 2 - i) for i in range(3)]]


def _wins(board, piece):
    return [cell for line in LINES for cell in line
            if board.get(cell) is None and sum(board.get(o) == piece for o in line if o != cell) == 2]


@register_task("tictactoe", "Abstraction", "place the red piece that completes a line of three; exactly one "
               "winning cell; candidates: every empty cell")
def tictactoe(rng, num_frames, split):
    g = 8
    n_o = int(rng.integers(1, 3)) if split == "id" else 3
    while True:
        board = {}
        line = LINES[rng.integers(len(LINES))]
        win = line[rng.integers(3)]
        for c in line:
            if c != win:
                board[c] = "X"
        free = [(r, c) for r in range(3) for c in range(3) if (r, c) not in board and (r, c) != win]
        for i in rng.choice(len(free), size=n_o, replace=False):
            board[free[i]] = "O"
        if set(_wins(board, "X")) == {win}:
            break
    empty = [(r, c) for r in range(3) for c in range(3) if (r, c) not in board]
    cell = lambda r, c: [(3 * r + a, 3 * c + b) for a in range(2) for b in range(2)]
    cands, arriving = [], _scaled("red", timeline(num_frames))     # the same colours for every candidate
    for e in empty:
        v = blank(g, num_frames)
        for (r, c), p in board.items():
            paint_frames(v, cell(r, c), "red" if p == "X" else "blue")
        paint_frames(v, cell(*e), arriving)
        cands.append(v)
    return out("place the red piece that wins", cands, empty.index(win), {"board": {f"{k}": v for k, v in board.items()},
               "win": win})
