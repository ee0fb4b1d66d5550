// Small time-series line charts drawn on a canvas: the last WINDOW_MS of
// samples the page collected itself, a y axis in the chart's unit, a time
// axis in the viewer's time zone, and an HTML legend (name, colour, latest
// value) beside each. No library: a few dozen lines of canvas drawing.
import { shortClock } from './format.js';

export const WINDOW_MS = 15 * 60 * 1000;

/** Samples of several named values over time, the oldest dropped past WINDOW_MS. */
export class Samples {
  constructor(names) {
    this.names = names;
    this.times = [];
    this.values = names.map(() => []);
  }

  /** `values` in the order of the names; null where a value is unknown (a gap in the line). */
  push(time, values) {
    this.times.push(time);
    values.forEach((v, i) => this.values[i].push(v));
    while (this.times.length > 0 && this.times[0] < time - WINDOW_MS) {
      this.times.shift();
      for (const list of this.values) list.shift();
    }
  }

  latest(i) {
    const list = this.values[i];
    return list.length > 0 ? list[list.length - 1] : null;
  }
}

/** A "nice" axis top at or above `max`: 1, 2 or 5 times a power of ten (or of 1024 for bytes). */
function niceCeiling(max, binary) {
  if (binary && !(max > 1024)) return 1024;
  if (!(max > 0)) return 1;
  const base = binary && max >= 1024 ? 1024 ** Math.floor(Math.log(max) / Math.log(1024)) : 10 ** Math.floor(Math.log10(max));
  for (const step of binary && max >= 1024 ? [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] : [1, 2, 5, 10]) {
    if (base * step >= max) return base * step;
  }
  return base * 10;
}

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {HTMLElement} legend
   * @param {{ samples: Samples, colors: string[], format: (v: number) => string, binary?: boolean }} options
   */
  constructor(canvas, legend, options) {
    this.canvas = canvas;
    this.legend = legend;
    this.options = options;
    this.legendValues = options.samples.names.map((name, i) => {
      const item = document.createElement('li');
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = options.colors[i];
      const label = document.createElement('span');
      label.className = 'legend-name';
      label.textContent = name;
      const value = document.createElement('span');
      value.className = 'legend-value';
      item.append(swatch, label, value);
      legend.append(item);
      return value;
    });
  }

  draw(now) {
    const { canvas, options } = this;
    const { samples, colors, format } = options;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const textColor = style.getPropertyValue('--chart-text').trim() || '#555';
    const gridColor = style.getPropertyValue('--chart-grid').trim() || '#ddd';
    ctx.font = `11px ${style.fontFamily}`;

    let max = 0;
    for (const list of samples.values) for (const v of list) if (v !== null && v > max) max = v;
    const top = niceCeiling(max, options.binary);
    const labels = [0, 0.25, 0.5, 0.75, 1].map((f) => format(top * f));
    const left = Math.ceil(Math.max(...labels.map((l) => ctx.measureText(l).width))) + 10;
    const right = 8;
    const plotTop = 8;
    const bottom = 20;
    const plotWidth = Math.max(10, width - left - right);
    const plotHeight = Math.max(10, height - plotTop - bottom);
    const start = now - WINDOW_MS;
    const x = (t) => left + ((t - start) / WINDOW_MS) * plotWidth;
    const y = (v) => plotTop + plotHeight - (v / top) * plotHeight;

    // Grid and y labels.
    ctx.strokeStyle = gridColor;
    ctx.fillStyle = textColor;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    [0, 0.25, 0.5, 0.75, 1].forEach((f, i) => {
      const yy = Math.round(y(top * f)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(left + plotWidth, yy);
      ctx.stroke();
      ctx.fillText(labels[i], left - 6, yy);
    });
    // Time labels every 5 minutes, on round minutes.
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const step = 5 * 60 * 1000;
    for (let t = Math.ceil(start / step) * step; t <= now; t += step) {
      const xx = Math.round(x(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, plotTop);
      ctx.lineTo(xx, plotTop + plotHeight);
      ctx.stroke();
      ctx.fillText(shortClock(t), Math.min(Math.max(xx, left + 16), left + plotWidth - 16), plotTop + plotHeight + 5);
    }

    // The lines; a null value breaks a line.
    ctx.lineWidth = 1.75;
    ctx.lineJoin = 'round';
    samples.values.forEach((list, i) => {
      ctx.strokeStyle = colors[i];
      ctx.beginPath();
      let drawing = false;
      list.forEach((v, k) => {
        if (v === null) {
          drawing = false;
          return;
        }
        const px = x(samples.times[k]);
        const py = y(v);
        if (drawing) ctx.lineTo(px, py);
        else ctx.moveTo(px, py);
        drawing = true;
      });
      ctx.stroke();
    });

    samples.names.forEach((_, i) => {
      const v = samples.latest(i);
      this.legendValues[i].textContent = v === null ? '–' : format(v);
    });
  }
}
