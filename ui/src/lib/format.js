// How numbers, times and sizes read on the dashboards.

// A time in seconds since 1970 as local date and time to the second.
export function clock(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const at = new Date(seconds * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}`;
}

// How long ago a time was, from `now` (both in seconds since 1970).
export function ago(seconds, now) {
  if (seconds === null || seconds === undefined) return "never";
  const gap = Math.max(0, now - seconds);
  if (gap < 60) return `${Math.round(gap)} s ago`;
  if (gap < 3600) return `${Math.round(gap / 60)} min ago`;
  return `${(gap / 3600).toFixed(1)} h ago`;
}

// A duration in seconds, with a unit.
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.round(seconds / 60)} min`;
}

// A size in bytes, with a decimal unit.
export function bytes(count) {
  if (count === null || count === undefined) return "–";
  if (count < 1000) return `${count} B`;
  if (count < 1e6) return `${(count / 1e3).toFixed(1)} kB`;
  return `${(count / 1e6).toFixed(2)} MB`;
}

// A metric or statistic for reading: six significant digits.
export function number(value) {
  if (value === null || value === undefined) return "–";
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e9) return String(value);
  return value.toPrecision(6).replace(/\.?0+(e|$)/, "$1");
}

// A job's progress as the model creator reports it: "round k of K, about N s left".
export function progress(model) {
  const total = model.expected_rounds ? ` of ${model.expected_rounds}` : "";
  let text = `round ${model.round}${total}`;
  if (model.status === "running" || model.status === "pending") {
    if (model.seconds_left !== null && model.seconds_left !== undefined) text += `, about ${duration(model.seconds_left)} left`;
  }
  return text;
}
