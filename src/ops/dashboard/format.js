// Numbers and times for people: 1.2k/s, 3.4 MiB, 2 h 5 min, times in the
// viewer's own time zone. Plain functions, no dependencies.

const SI = [
  [1e9, 'G'],
  [1e6, 'M'],
  [1e3, 'k'],
];

/** 1234 -> "1.2k", 12 -> "12", 0.25 -> "0.25". */
export function compact(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  const abs = Math.abs(n);
  for (const [size, suffix] of SI) {
    if (abs >= size) return `${trim(n / size)}${suffix}`;
  }
  if (abs === 0) return '0';
  if (abs < 0.01) return '<0.01';
  if (Number.isInteger(n) || abs >= 10) return String(Math.round(n));
  return trim(n, abs < 1 ? 2 : 1);
}

function trim(x, digits = 1) {
  const abs = Math.abs(x);
  const fixed = abs >= 100 ? x.toFixed(0) : x.toFixed(digits);
  return fixed.includes('.') ? fixed.replace(/\.?0+$/, '') : fixed;
}

/** Events or requests per second: "1.2k/s". */
export function rate(n) {
  return `${compact(n)}/s`;
}

const BINARY = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 3565158 -> "3.4 MiB". */
export function bytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  let i = 0;
  let x = n;
  while (Math.abs(x) >= 1024 && i < BINARY.length - 1) {
    x /= 1024;
    i++;
  }
  return `${i === 0 ? Math.round(x) : trim(x)} ${BINARY[i]}`;
}

export function byteRate(n) {
  return `${bytes(n)}/s`;
}

/** A count with thousands separators in the viewer's locale. */
export function count(n) {
  if (n === undefined || n === null) return '–';
  return Math.round(n).toLocaleString();
}

/** Seconds -> "3 d 4 h", "2 h 5 min", "4 min 10 s", "42 s". */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

/** Milliseconds with a sensible precision: "0.4 ms", "12 ms", "1.3 s". */
export function millis(ms) {
  if (ms === undefined || ms === null) return '';
  if (ms >= 1000) return `${trim(ms / 1000)} s`;
  return ms >= 10 ? `${Math.round(ms)} ms` : `${trim(ms, 1)} ms`;
}

/** A clock time in the viewer's time zone, 24-hour: "14:03:27", with milliseconds when asked. */
export function clock(ms, withMillis = false) {
  const d = new Date(ms);
  const text = d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  return withMillis ? `${text}.${String(d.getMilliseconds()).padStart(3, '0')}` : text;
}

/** Hours and minutes only, for chart axes. */
export function shortClock(ms) {
  return new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
}

export function timeZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
  } catch {
    return 'local time';
  }
}
