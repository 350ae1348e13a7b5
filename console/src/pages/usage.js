// Usage: tokens and cost by day, model, agent and tenant, and each tenant's budget against its use.
import { useState } from "preact/hooks";
import { get } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, fmtInt, fmtUsd } from "../ui.js";
import { DailyChart, Bars } from "./chart.js";

const DAY_MS = 86400000;
const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);

async function usage(range, dimension, extra = {}) {
  const params = { startTime: `${range.from}T00:00:00Z`, endTime: `${isoDay(Date.parse(range.to) + DAY_MS)}T00:00:00Z`, groupBy: dimension, ...extra };
  return (await get("/usage", params)).rows || [];
}

/** One row per day of the range, zeros where nothing was used, so the chart's axis is the range. */
function everyDay(range, rows) {
  const byDay = Object.fromEntries(rows.map((r) => [r.day, r]));
  const days = [];
  for (let t = Date.parse(range.from); t <= Date.parse(range.to) && days.length < 400; t += DAY_MS) {
    const day = isoDay(t);
    days.push(byDay[day] || { day, turns: 0, totalTokens: 0, costUsd: 0 });
  }
  return days;
}

function Breakdown({ title, rows, field, names, empty }) {
  const sorted = [...rows].sort((a, b) => Number(b.totalTokens) - Number(a.totalTokens));
  const label = (r) => (names && names[r[field]]) || r[field] || empty;
  return html`<div class="breakdown">
    <${Bars} title=${`${title}: tokens`} rows=${sorted.map((r) => ({ label: label(r), value: Number(r.totalTokens), text: fmtInt(r.totalTokens) }))} />
    <${Bars} title=${`${title}: cost`} rows=${sorted.map((r) => ({ label: label(r), value: Number(r.costUsd), text: fmtUsd(r.costUsd) }))} />
  </div>`;
}

function Budgets({ tenants }) {
  // A budget counts from the start of its period: today, or this month (UTC).
  const now = new Date();
  const today = isoDay(now.getTime());
  const month = `${today.slice(0, 8)}01`;
  const [used, error] = useLoad(async () => {
    const [day, monthly] = await Promise.all([
      usage({ from: today, to: today }, "USAGE_DIMENSION_TENANT"),
      usage({ from: month, to: today }, "USAGE_DIMENSION_TENANT"),
    ]);
    return { day, monthly };
  }, [today]);
  const budgeted = tenants.filter((t) => t.budget && (t.budget.maxTokens || t.budget.maxCostUsd));
  return html`<section aria-labelledby="budgets-title"><h2 id="budgets-title">Budgets</h2>
    <${ErrorBox} error=${error} />
    ${!budgeted.length && html`<p class="muted">No tenant has a budget.</p>`}
    <div class="table-wrap"><table>
      <thead><tr><th>Tenant</th><th>Period</th><th>Tokens used / max</th><th>Cost used / max</th></tr></thead>
      <tbody>${budgeted.map((t) => {
        const rows = t.budget.period === "BUDGET_PERIOD_DAY" ? used?.day : used?.monthly;
        const row = (rows || []).find((r) => r.tenantId === t.id) || {};
        const cell = (value, max, fmt) => html`<td>${max ? html`<meter min="0" max=${max} high=${max * 0.8} value=${Number(value || 0)}></meter> ${fmt(value)} / ${fmt(max)}` : "no limit"}</td>`;
        return html`<tr><td>${t.displayName || t.id}</td><td>${t.budget.period === "BUDGET_PERIOD_DAY" ? "day" : "month"}</td>
          ${cell(row.totalTokens, Number(t.budget.maxTokens || 0), fmtInt)}${cell(row.costUsd, Number(t.budget.maxCostUsd || 0), fmtUsd)}</tr>`;
      })}</tbody>
    </table></div>
  </section>`;
}

export function UsagePage({ role }) {
  const [range, setRange] = useState({ from: isoDay(Date.now() - 29 * DAY_MS), to: isoDay(Date.now()) });
  const [data, error, loading] = useLoad(async () => {
    const [days, models, agents, tenants] = await Promise.all([
      usage(range, "USAGE_DIMENSION_DAY"),
      usage(range, "USAGE_DIMENSION_MODEL"),
      usage(range, "USAGE_DIMENSION_AGENT"),
      usage(range, "USAGE_DIMENSION_TENANT"),
    ]);
    return { days: everyDay(range, days), models, agents, tenants };
  }, [range.from, range.to]);
  const [agentList] = useLoad(() => get("/agents", { pageSize: 100 }), []);
  const [tenantList] = useLoad(async () => (role.operator ? get("/tenants", { pageSize: 100 }) : { tenants: [] }), [role.operator]);
  const agentNames = Object.fromEntries((agentList?.agents || []).map((a) => [a.id, a.key]));
  const tenantNames = Object.fromEntries((tenantList?.tenants || []).map((t) => [t.id, t.displayName || t.id]));
  const totals = (data?.days || []).reduce((acc, r) => ({ tokens: acc.tokens + Number(r.totalTokens), cost: acc.cost + Number(r.costUsd), turns: acc.turns + Number(r.turns) }), { tokens: 0, cost: 0, turns: 0 });
  const days = (data?.days || []).map((r) => r.day);
  return html`<${Page} title="Usage">
    <div class="toolbar">
      <label for="usage-from">From</label>
      <input id="usage-from" type="date" value=${range.from} onChange=${(e) => setRange({ ...range, from: e.currentTarget.value })} />
      <label for="usage-to">To</label>
      <input id="usage-to" type="date" value=${range.to} onChange=${(e) => setRange({ ...range, to: e.currentTarget.value })} />
    </div>
    <${ErrorBox} error=${error} />
    <${Loading} when=${loading} />
    ${data && html`<p class="totals"><span>${fmtInt(totals.turns)} turns</span> <span>${fmtInt(totals.tokens)} tokens</span> <span>${fmtUsd(totals.cost)}</span></p>`}
    ${days.length > 0 && html`<${DailyChart} title="Tokens and cost by day" days=${days} series=${[
      { label: "tokens", values: data.days.map((r) => Number(r.totalTokens)), color: "#3b82f6" },
      { label: "cost (USD)", values: data.days.map((r) => Number(r.costUsd)), color: "#f59e0b" },
    ]} />`}
    ${data && !totals.turns && html`<p class="muted">No usage in this range.</p>`}
    ${data && html`<${Breakdown} title="By model" rows=${data.models} field="model" empty="(no model)" />
      <${Breakdown} title="By agent" rows=${data.agents} field="agentId" names=${agentNames} empty="(no agent: plain model)" />
      <${Breakdown} title="By tenant" rows=${data.tenants} field="tenantId" names=${tenantNames} empty="(no tenant)" />`}
    ${role.operator && tenantList && html`<${Budgets} tenants=${tenantList.tenants || []} />`}
  <//>`;
}
