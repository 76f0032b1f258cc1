// Live charts of a job's metrics with uPlot (from the npm registry, built into
// /console/vendor by `make setup`). Points are keyed by step: an event seen
// twice (a replay after a reconnect or a reload) replaces its point instead of
// adding one, so a chart never shows duplicates.

import { h, number } from './util.js';

const COLORS = ['#2458c6', '#c2410c', '#15803d', '#7c3aed'];

export class MetricChart {
  /** `series`: labels of the lines (e.g. ["train", "validation"]). */
  constructor(id, title, series, unit = '') {
    this.title = title;
    this.series = series;
    this.unit = unit;
    this.values = series.map(() => new Map()); // step → value, per line
    this.summary = h('p', { class: 'muted', 'aria-live': 'off' }, 'no points yet');
    this.plotArea = h('div', { class: 'plot' });
    this.element = h('figure', { id, class: 'card chart', dataset: { points: '0', steps: '' } },
      h('figcaption', {}, title), this.plotArea, this.summary);
    this.plot = null;
    this.pending = false;
  }

  add(line, step, value) {
    const x = Number(step);
    const y = Number(value);
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    this.values[line].set(x, y);
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => this.draw());
    }
  }

  steps() {
    return [...new Set(this.values.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
  }

  draw() {
    this.pending = false;
    const xs = this.steps();
    const data = [xs, ...this.values.map((m) => xs.map((x) => (m.has(x) ? m.get(x) : null)))];
    const points = this.values.reduce((sum, m) => sum + m.size, 0);
    this.element.dataset.points = String(points);
    this.element.dataset.steps = this.values[0] ? [...this.values[0].keys()].sort((a, b) => a - b).join(',') : '';
    const latest = this.series
      .map((label, i) => {
        const last = [...this.values[i].entries()].sort((a, b) => a[0] - b[0]).pop();
        return last ? `${label} ${number(last[1])}${this.unit} at step ${last[0]}` : null;
      })
      .filter(Boolean);
    this.summary.textContent = latest.length ? `Latest: ${latest.join('; ')}.` : 'no points yet';
    if (!window.uPlot) {
      this.plotArea.textContent = 'Charts need the console files built by `make setup` (uPlot).';
      return;
    }
    if (!this.plot) {
      const width = Math.max(280, this.plotArea.clientWidth || 520);
      this.plot = new window.uPlot(
        {
          width,
          height: 220,
          scales: { x: { time: false } },
          axes: [{ label: 'step' }, { label: this.unit.trim() || this.title, size: 60 }],
          series: [{ label: 'step' }, ...this.series.map((label, i) => ({
            label, stroke: COLORS[i], width: 2, spanGaps: true, points: { show: true, size: 4 },
          }))],
        },
        data,
        this.plotArea,
      );
      this.plot.root.setAttribute('aria-hidden', 'true'); // the summary line says it in words
    } else {
      this.plot.setData(data);
    }
  }

  destroy() {
    this.plot?.destroy();
  }
}
