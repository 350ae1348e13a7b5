// Tenants (operators only): list, create with a budget and rate limits, delete.
import { useState } from "preact/hooks";
import { get, post, del } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, fmtTime, fmtInt, fmtUsd } from "../ui.js";

export function TenantsPage() {
  const [data, error, loading, reload] = useLoad(() => get("/tenants", { pageSize: 100 }), []);
  const [form, setForm] = useState({ id: "", displayName: "", period: "BUDGET_PERIOD_MONTH", maxTokens: "", maxCostUsd: "", rpm: "" });
  const [actionError, setActionError] = useState(null);
  const set = (field) => (e) => setForm({ ...form, [field]: e.currentTarget.value });
  const act = async (fn) => {
    setActionError(null);
    try {
      await fn();
      reload();
    } catch (failure) {
      setActionError(failure);
    }
  };
  const create = (event) => {
    event.preventDefault();
    const tenant = { id: form.id.trim(), displayName: form.displayName };
    if (form.maxTokens || form.maxCostUsd) {
      tenant.budget = { period: form.period };
      if (form.maxTokens) tenant.budget.maxTokens = form.maxTokens;
      if (form.maxCostUsd) tenant.budget.maxCostUsd = Number(form.maxCostUsd);
    }
    if (form.rpm) tenant.rateLimits = { requestsPerMinute: form.rpm };
    act(() => post("/tenants", tenant));
  };
  return html`<${Page} title="Tenants">
    <${ErrorBox} error=${error || actionError} />
    <${Loading} when=${loading} />
    <div class="table-wrap"><table>
      <thead><tr><th>Name</th><th>Id</th><th>Budget</th><th>Rate limits</th><th>Created</th><th></th></tr></thead>
      <tbody>${(data?.tenants || []).map(
        (t) => html`<tr><td>${t.displayName}</td><td><code>${t.id}</code></td>
          <td>${t.budget?.period ? `${t.budget.maxTokens ? `${fmtInt(t.budget.maxTokens)} tokens ` : ""}${t.budget.maxCostUsd ? fmtUsd(t.budget.maxCostUsd) : ""} per ${t.budget.period === "BUDGET_PERIOD_DAY" ? "day" : "month"}` : "none"}</td>
          <td>${t.rateLimits?.requestsPerMinute && Number(t.rateLimits.requestsPerMinute) ? `${t.rateLimits.requestsPerMinute} req/min` : ""}</td>
          <td>${fmtTime(t.createTime)}</td>
          <td>${t.id !== "default" && html`<button class="danger" onClick=${() => confirm(`Delete tenant ${t.displayName || t.id}?`) && act(() => del(`/tenants/${t.id}`))}>Delete</button>`}</td></tr>`,
      )}</tbody>
    </table></div>
    <form class="inline-form" onSubmit=${create} aria-labelledby="new-tenant">
      <h2 id="new-tenant">New tenant</h2>
      <label for="t-id">Id (a slug: 1 to 63 of a-z, 0-9, - and _)</label><input id="t-id" required value=${form.id} onInput=${set("id")} />
      <label for="t-name">Display name</label><input id="t-name" required value=${form.displayName} onInput=${set("displayName")} />
      <label for="t-period">Budget period</label>
      <select id="t-period" value=${form.period} onChange=${set("period")}><option value="BUDGET_PERIOD_MONTH">month</option><option value="BUDGET_PERIOD_DAY">day</option></select>
      <label for="t-tokens">Max tokens</label><input id="t-tokens" type="number" min="1" value=${form.maxTokens} onInput=${set("maxTokens")} />
      <label for="t-cost">Max cost (USD)</label><input id="t-cost" type="number" min="0" step="0.01" value=${form.maxCostUsd} onInput=${set("maxCostUsd")} />
      <label for="t-rpm">Requests per minute</label><input id="t-rpm" type="number" min="1" value=${form.rpm} onInput=${set("rpm")} />
      <button type="submit">Create tenant</button>
    </form>
  <//>`;
}
