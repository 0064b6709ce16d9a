// Small SVG charts drawn from data: a line/point chart (lines, steps,
// stacked areas, dots) and a bar chart. Each data point is an element of
// class `pt` (dots) or `bar` with a <title>, so it can be read and tested.

const NS = 'http://www.w3.org/2000/svg';
const SIZE = { width: 560, height: 250, left: 62, right: 12, top: 26, bottom: 36 };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(label) {
  return svg('svg', {
    class: 'chart', viewBox: `0 0 ${SIZE.width} ${SIZE.height}`, role: 'img', 'aria-label': label,
  });
}

/** min and max of `values`, widened when they are equal. */
function extent(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!Number.isFinite(lo)) return [0, 1];
  if (lo === hi) { lo -= 1; hi += 1; }
  return [lo, hi];
}

/** A linear map from `domain` to `range`. */
function scale([d0, d1], [r0, r1]) {
  return (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
}

function tickText(v) {
  const abs = Math.abs(v);
  return abs !== 0 && (abs >= 1e5 || abs < 1e-3) ? v.toExponential(1) : String(Number(v.toPrecision(4)));
}

function axes(root, xs, ys, x, y, labels) {
  const { width, height, left, right, top, bottom } = SIZE;
  const g = svg('g', { class: 'axes' });
  g.append(svg('line', { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }));
  g.append(svg('line', { x1: left, y1: top, x2: left, y2: height - bottom }));
  for (let i = 0; i <= 4; i++) {
    const xv = xs[0] + ((xs[1] - xs[0]) * i) / 4;
    const yv = ys[0] + ((ys[1] - ys[0]) * i) / 4;
    g.append(svg('text', { x: x(xv), y: height - bottom + 14, 'text-anchor': 'middle' }, labels.xTick(xv)));
    g.append(svg('text', { x: left - 4, y: y(yv) + 4, 'text-anchor': 'end' }, tickText(yv)));
  }
  g.append(svg('text', { class: 'label', x: (left + width - right) / 2, y: height - 4, 'text-anchor': 'middle' }, labels.x));
  const middle = (top + height - bottom) / 2;
  g.append(svg('text', { class: 'label', x: -middle, y: 12, transform: 'rotate(-90)', 'text-anchor': 'middle' }, labels.y));
  root.append(g);
}

/** Points of a step line through `points` (holds each value until the next x). */
function steps(points) {
  return points.flatMap(([px, py], i) => (i === 0 ? [[px, py]] : [[px, points[i - 1][1]], [px, py]]));
}

/**
 * A chart of `series`: each {name, cls, points: [[x, y]], line, step, area, dots}.
 * `x`/`y` label the axes; `xTick` formats x ticks (numbers by default).
 */
export function plot({ title, x = '', y = '', xTick = tickText, series }) {
  const root = frame(title);
  const all = series.flatMap((s) => s.points);
  const xs = extent(all.map((p) => p[0]));
  const ys = extent(series.some((s) => s.area) ? [0, ...all.map((p) => p[1])] : all.map((p) => p[1]));
  const sx = scale(xs, [SIZE.left, SIZE.width - SIZE.right]);
  const sy = scale(ys, [SIZE.height - SIZE.bottom, SIZE.top]);
  axes(root, xs, ys, sx, sy, { x, y, xTick });
  for (const s of series) {
    const path = s.step ? steps(s.points) : s.points;
    const coords = path.map(([px, py]) => `${sx(px).toFixed(1)},${sy(py).toFixed(1)}`);
    if (s.area && path.length > 0) {
      const base = `${sx(path[path.length - 1][0]).toFixed(1)},${sy(s.base ?? 0).toFixed(1)} ${sx(path[0][0]).toFixed(1)},${sy(s.base ?? 0).toFixed(1)}`;
      root.append(svg('polygon', { class: `area ${s.cls}`, points: `${coords.join(' ')} ${base}` }));
    }
    if (s.line || s.step) root.append(svg('polyline', { class: `line ${s.cls}`, points: coords.join(' ') }));
    if (s.dots) {
      for (const [px, py, label] of s.points) {
        const dot = svg('circle', { class: `pt ${s.cls}`, cx: sx(px).toFixed(1), cy: sy(py).toFixed(1), r: 3.5 });
        dot.append(svg('title', {}, label ?? `${s.name}: ${tickText(px)}, ${tickText(py)}`));
        root.append(dot);
      }
    }
  }
  return withLegend(root, series);
}

/** A bar per {label, value, cls}. */
export function bars({ title, y = '', items }) {
  const root = frame(title);
  const ys = [0, Math.max(1, ...items.map((i) => i.value))];
  const sy = scale(ys, [SIZE.height - SIZE.bottom, SIZE.top]);
  const slot = (SIZE.width - SIZE.left - SIZE.right) / Math.max(1, items.length);
  axes(root, [0, 1], ys, () => -100, sy, { x: '', y, xTick: () => '' });
  items.forEach((item, i) => {
    const x = SIZE.left + i * slot + slot * 0.15;
    const rect = svg('rect', {
      class: `bar ${item.cls ?? ''}`, x: x.toFixed(1), y: sy(item.value).toFixed(1),
      width: (slot * 0.7).toFixed(1), height: (sy(0) - sy(item.value)).toFixed(1),
    });
    rect.append(svg('title', {}, `${item.label}: ${item.value}`));
    root.append(rect);
    root.append(svg('text', { class: 'label', x: (x + slot * 0.35).toFixed(1), y: SIZE.height - SIZE.bottom + 14, 'text-anchor': 'middle' }, item.label));
  });
  return root;
}

function withLegend(root, series) {
  const named = series.filter((s) => s.name);
  named.forEach((s, i) => {
    const x = SIZE.left + 8 + i * 130;
    const y = 12;
    root.append(svg('rect', { class: `key ${s.cls}`, x, y: y - 8, width: 10, height: 10 }));
    root.append(svg('text', { class: 'legend', x: x + 14, y: y + 1 }, s.name));
  });
  return root;
}
