// The model catalog: context windows and prices, and whether the catalog is stale.
import { get } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, fmtInt, fmtPerMillion, fmtTime, Badge } from "../ui.js";

export function ModelsPage() {
  const [data, error, loading] = useLoad(() => get("/catalog/models"), []);
  return html`<${Page} title="Models">
    <${ErrorBox} error=${error} />
    <${Loading} when=${loading} />
    ${data &&
    html`<p class="muted">Catalog refreshed ${fmtTime(data.refreshTime)}
      ${data.stale && html` <${Badge} kind="warn">stale: the upstream's model list could not be refreshed<//>`}</p>`}
    <div class="table-wrap"><table>
      <thead><tr><th>Model</th><th>Owner</th><th class="num">Context window</th>
        <th class="num">Input / 1M tokens</th><th class="num">Output / 1M tokens</th></tr></thead>
      <tbody>${(data?.models || []).map(
        (m) => html`<tr><td><code>${m.id}</code></td><td>${m.ownedBy}</td>
          <td class="num">${m.contextWindow ? fmtInt(m.contextWindow) : "unknown"}</td>
          <td class="num">${fmtPerMillion(m.inputCostPerToken)}</td><td class="num">${fmtPerMillion(m.outputCostPerToken)}</td></tr>`,
      )}</tbody>
    </table></div>
  <//>`;
}
