// Small time-series line charts drawn on a canvas: the last WINDOW_MS of
// samples the page collected itself (from when it opened, at least a minute
// wide, until 15 minutes are there), a y axis in the chart's unit, a time
// axis in the viewer's time zone, and an HTML legend (name, colour, latest
// value) beside each. No library: a few dozen lines of canvas drawing.
import { clock, shortClock } from './format.js';

const MIN_SPAN_MS = 60 * 1000;

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

/**
 * The axis top: four equal steps of a round size (1, 2 or 5 times a power of
 * ten; for bytes, a power of two times a power of 1,024), so that every
 * grid line falls on a round number.
 */
function niceTop(max, binary) {
  const quarter = Math.max(max, 0) / 4;
  if (binary) {
    if (quarter <= 256) return 1024;
    const unit = 1024 ** Math.floor(Math.log(quarter) / Math.log(1024));
    return 4 * unit * 2 ** Math.ceil(Math.log2(quarter / unit));
  }
  if (quarter <= 0.25) return 1;
  const power = 10 ** Math.floor(Math.log10(quarter));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((v) => v >= quarter);
  return 4 * step;
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
    const top = niceTop(max, options.binary);
    const labels = [0, 0.25, 0.5, 0.75, 1].map((f) => format(top * f));
    const left = Math.ceil(Math.max(...labels.map((l) => ctx.measureText(l).width))) + 10;
    const right = 8;
    const plotTop = 8;
    const bottom = 20;
    const plotWidth = Math.max(10, width - left - right);
    const plotHeight = Math.max(10, height - plotTop - bottom);
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, samples.times.length > 0 ? now - samples.times[0] : 0));
    const start = now - span;
    const x = (t) => left + ((t - start) / span) * plotWidth;
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
    // Time labels on round times, about four of them.
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const step = [15, 30, 60, 120, 300].map((s) => s * 1000).find((s) => span / s <= 5) ?? 300000;
    const label = step < 60000 ? (t) => clock(t) : shortClock;
    for (let t = Math.ceil(start / step) * step; t <= now; t += step) {
      const xx = Math.round(x(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, plotTop);
      ctx.lineTo(xx, plotTop + plotHeight);
      ctx.stroke();
      ctx.fillText(label(t), Math.min(Math.max(xx, left + 24), left + plotWidth - 24), plotTop + plotHeight + 5);
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
