// Axes for the SVG charts: a linear or logarithmic map from data to pixels, with round ticks.

function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].find((m) => m * power >= raw) * power;
  return step;
}

// Ticks covering [low, high] at a round step (1, 2 or 5 times a power of ten).
export function linearTicks(low, high, count = 5, integers = false) {
  if (low === high) return [low];
  let step = niceStep(high - low, count);
  if (integers) step = Math.max(1, Math.round(step));
  const first = Math.ceil(low / step) * step;
  const ticks = [];
  for (let tick = first; tick <= high + step * 1e-9; tick += step) ticks.push(Number(tick.toPrecision(12)));
  return ticks;
}

// Powers of ten covering [low, high] (both > 0), thinned to at most `count` + 1 ticks.
export function logTicks(low, high, count = 6) {
  const from = Math.floor(Math.log10(low));
  const to = Math.ceil(Math.log10(high));
  const stride = Math.max(1, Math.ceil((to - from) / count));
  const ticks = [];
  for (let exponent = from; exponent <= to; exponent += stride) ticks.push(10 ** exponent);
  return ticks;
}

// Whether values span enough orders of magnitude to read best on a log scale.
export function wantsLog(values) {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length < 2 || finite.some((v) => v <= 0)) return false;
  return Math.max(...finite) / Math.min(...finite) >= 20;
}

// The domain an axis shows for these values: padded a little, widened when flat, and for a log
// axis from one power of ten to another.
export function domain(values, log) {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return [0, 1];
  let low = Math.min(...finite);
  let high = Math.max(...finite);
  if (log) return [10 ** Math.floor(Math.log10(low)), 10 ** Math.ceil(Math.log10(high))];
  if (low === high) {
    const pad = Math.abs(low) * 0.1 || 1;
    return [low - pad, high + pad];
  }
  const pad = (high - low) * 0.05;
  return [low > 0 && low - pad < 0 ? 0 : low - pad, high + pad];
}

// The map from a value to a pixel on an axis from `start` to `end` pixels.
export function mapper([low, high], [start, end], log) {
  if (log) {
    const a = Math.log10(low);
    const b = Math.log10(high);
    return (v) => start + ((Math.log10(v) - a) / (b - a || 1)) * (end - start);
  }
  return (v) => start + ((v - low) / (high - low || 1)) * (end - start);
}

// A tick's label: short, with an exponent for very large or small values.
export function tickLabel(value) {
  if (value === 0) return "0";
  const size = Math.abs(value);
  if (size >= 1e5 || size < 1e-3) return value.toExponential(0).replace("e+", "e");
  return String(Number(value.toPrecision(4)));
}
