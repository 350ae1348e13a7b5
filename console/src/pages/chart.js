// A time series of daily values drawn with uPlot (small, fast, canvas-based,
// and it needs no eval, so it runs under the console's CSP).
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { html } from "../ui.js";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";

/** days: ["YYYY-MM-DD"]; series: [{label, values, color}] on one axis each. */
export function DailyChart({ title, days, series }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current || !days.length) return undefined;
    const axis = { stroke: css("--fg"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") } };
    const width = Math.max(280, box.current.clientWidth);
    const plot = new uPlot(
      {
        title,
        width,
        height: 220,
        series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: s.color, width: 2, scale: `y${i}`, points: { show: days.length < 40 } }))],
        axes: [{ ...axis }, ...series.map((s, i) => ({ ...axis, scale: `y${i}`, side: i ? 1 : 3, label: s.label }))],
        scales: { x: { time: true } },
      },
      [days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000), ...series.map((s) => s.values)],
      box.current,
    );
    const resize = () => plot.setSize({ width: Math.max(280, box.current.clientWidth), height: 220 });
    addEventListener("resize", resize);
    return () => {
      removeEventListener("resize", resize);
      plot.destroy();
    };
  }, [title, JSON.stringify(days), JSON.stringify(series)]);
  return html`<figure class="chart" role="img" aria-label=${`${title}: ${days.length} days`} ref=${box}></figure>`;
}

/** Horizontal bars for a breakdown (by model, agent or tenant): plain, accessible HTML. */
export function Bars({ title, rows }) {
  const max = Math.max(1e-12, ...rows.map((r) => r.value));
  return html`<figure class="bars"><figcaption>${title}</figcaption>
    <table><tbody>${rows.map(
      (r) => html`<tr><th scope="row">${r.label}</th>
        <td class="bar-cell"><meter min="0" max=${max} value=${r.value} aria-label=${r.label}></meter></td>
        <td class="num">${r.text}</td></tr>`,
    )}</tbody></table>
  </figure>`;
}
