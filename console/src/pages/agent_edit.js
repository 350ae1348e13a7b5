// One agent: create or edit it (operators), and its revisions with a diff between two.
import { useEffect, useState } from "preact/hooks";
import { get, post, patch } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, fmtTime, Badge, enumText } from "../ui.js";
import { ToolEditor, toolProblems, toolToDraft, draftToTool } from "./tool_editor.js";
import { RevisionDiff } from "./revisions.js";

const BUILTINS = ["calculator", "current_time", "echo"];
const EMPTY = {
  key: "", displayName: "", systemPrompt: "", defaultModel: "agentapi-offline", fallbackModels: [],
  builtinTools: [], tools: [], mcpServers: [], metadata: {},
};

const EDITED = [
  "display_name", "system_prompt", "default_model", "fallback_models", "temperature", "max_steps",
  "builtin_tools", "tools", "mcp_servers", "metadata", "allowed_tenants", "routing_mode",
];
const ROUTING = ["ROUTING_MODE_PASSTHROUGH", "ROUTING_MODE_REASONING", "ROUTING_MODE_AUTO", "ROUTING_MODE_ORCHESTRATION"];

function toDraft(agent) {
  return {
    key: agent.key || "",
    displayName: agent.displayName || "",
    systemPrompt: agent.systemPrompt || "",
    defaultModel: agent.defaultModel || "",
    fallbackModels: (agent.fallbackModels || []).join(", "),
    temperature: agent.temperature === undefined ? "" : String(agent.temperature),
    maxSteps: agent.maxSteps === undefined ? "" : String(agent.maxSteps),
    builtinTools: agent.builtinTools || [],
    tools: (agent.tools || []).map(toolToDraft),
    mcpServers: JSON.stringify(agent.mcpServers || [], null, 2),
    metadata: JSON.stringify(agent.metadata || {}, null, 2),
    allowedTenants: (agent.allowedTenants || []).join(", "),
    routingMode: agent.routingMode && agent.routingMode !== "ROUTING_MODE_UNSPECIFIED" ? agent.routingMode : "",
  };
}

function jsonProblem(text, want) {
  try {
    const value = JSON.parse(text || (want === "array" ? "[]" : "{}"));
    const ok = want === "array" ? Array.isArray(value) : value && typeof value === "object" && !Array.isArray(value);
    return ok ? "" : `must be a JSON ${want}`;
  } catch (error) {
    return `not JSON: ${error.message}`;
  }
}

function fromDraft(draft) {
  const agent = {
    key: draft.key.trim(),
    displayName: draft.displayName,
    systemPrompt: draft.systemPrompt,
    defaultModel: draft.defaultModel.trim(),
    fallbackModels: draft.fallbackModels.split(",").map((m) => m.trim()).filter(Boolean),
    builtinTools: draft.builtinTools,
    tools: draft.tools.map(draftToTool),
    mcpServers: JSON.parse(draft.mcpServers || "[]"),
    metadata: JSON.parse(draft.metadata || "{}"),
    allowedTenants: draft.allowedTenants.split(",").map((t) => t.trim()).filter(Boolean),
    routingMode: draft.routingMode || "ROUTING_MODE_UNSPECIFIED",
  };
  if (draft.temperature !== "") agent.temperature = Number(draft.temperature);
  if (draft.maxSteps !== "") agent.maxSteps = Number(draft.maxSteps);
  return agent;
}

export function AgentEditPage({ id, role }) {
  const creating = !id;
  const readOnly = !role.operator;
  const [draft, setDraft] = useState(creating ? toDraft(EMPTY) : null);
  const [saveError, setSaveError] = useState(null);
  const [saved, setSaved] = useState("");
  const [agent, error, loading, reload] = useLoad(
    async () => (creating ? null : (await get(`/agents/${id}`)).agent),
    [id],
  );
  const [catalog] = useLoad(() => get("/catalog/models"), []);
  useEffect(() => {
    if (agent) setDraft(toDraft(agent));
  }, [agent]);
  if (!draft) return html`<${Page} title="Agent"><${ErrorBox} error=${error} /><${Loading} when=${loading} /><//>`;

  const set = (field) => (e) => setDraft({ ...draft, [field]: e.currentTarget.value });
  const problems = [
    ...draft.tools.flatMap((t, i) => toolProblems(t).map((p) => `tool ${i + 1}: ${p}`)),
    ...[jsonProblem(draft.metadata, "object") && `metadata: ${jsonProblem(draft.metadata, "object")}`],
    ...[jsonProblem(draft.mcpServers, "array") && `MCP servers: ${jsonProblem(draft.mcpServers, "array")}`],
  ].filter(Boolean);
  const save = async (event) => {
    event.preventDefault();
    setSaveError(null);
    setSaved("");
    try {
      const body = fromDraft(draft);
      if (creating) {
        const created = await post("/agents", body);
        location.hash = `#/agents/${created.agent.id}`;
      } else {
        delete body.key; // the key is the agent's address: fixed once created
        // The mask names every field the form edits: one left empty (temperature, max
        // steps) is absent from the body and so cleared; fields the form lacks stay as they are.
        await patch(`/agents/${id}`, { ...body, etag: agent.etag }, { updateMask: EDITED.join(",") });
        setSaved("Saved.");
        reload();
      }
    } catch (failure) {
      setSaveError(failure);
    }
  };
  const toggleBuiltin = (name) => {
    const has = draft.builtinTools.includes(name);
    setDraft({ ...draft, builtinTools: has ? draft.builtinTools.filter((n) => n !== name) : [...draft.builtinTools, name] });
  };
  const models = (catalog?.models || []).map((m) => m.id);
  const title = creating ? "New agent" : `Agent ${agent?.key || ""}`;
  return html`<${Page} title=${title} actions=${!creating && html`<a class="button" href=${`#/playground?agent=${id}`}>Try in playground</a>`}>
    ${agent?.deleteTime && html`<p><${Badge} kind="bad">deleted ${fmtTime(agent.deleteTime)}, purged after ${fmtTime(agent.expireTime)}<//></p>`}
    ${(agent?.unsupportedModels || []).length > 0 &&
    html`<p class="warn" role="status">Not in the model catalog: ${agent.unsupportedModels.join(", ")}</p>`}
    <form class="agent-form" onSubmit=${save}>
      <fieldset disabled=${readOnly}>
        <div class="grid2">
          <div><label for="agent-key">Key</label>
            <input id="agent-key" required value=${draft.key} disabled=${!creating} onInput=${set("key")} /></div>
          <div><label for="agent-name">Display name</label>
            <input id="agent-name" value=${draft.displayName} onInput=${set("displayName")} /></div>
          <div><label for="agent-model">Default model</label>
            <input id="agent-model" required list="catalog-models" value=${draft.defaultModel} onInput=${set("defaultModel")} /></div>
          <div><label for="agent-fallbacks">Fallback models (comma-separated, in order)</label>
            <input id="agent-fallbacks" list="catalog-models" value=${draft.fallbackModels} onInput=${set("fallbackModels")} /></div>
          <div><label for="agent-temperature">Temperature (0 to 2; empty: the upstream's)</label>
            <input id="agent-temperature" type="number" min="0" max="2" step="0.1" value=${draft.temperature} onInput=${set("temperature")} /></div>
          <div><label for="agent-steps">Max steps (1 to 64; empty: 8)</label>
            <input id="agent-steps" type="number" min="1" max="64" value=${draft.maxSteps} onInput=${set("maxSteps")} /></div>
          <div><label for="agent-tenants">Allowed tenants (comma-separated; empty: every tenant)</label>
            <input id="agent-tenants" value=${draft.allowedTenants} onInput=${set("allowedTenants")} /></div>
          <div><label for="agent-routing">Routing mode</label>
            <select id="agent-routing" value=${draft.routingMode} onChange=${set("routingMode")}>
              <option value="">(default: passthrough)</option>
              ${ROUTING.map((mode) => html`<option value=${mode}>${enumText(mode, "ROUTING_MODE_")}</option>`)}
            </select></div>
        </div>
        <datalist id="catalog-models">${models.map((m) => html`<option value=${m} />`)}</datalist>
        <label for="agent-prompt">System prompt</label>
        <textarea id="agent-prompt" rows="5" value=${draft.systemPrompt} onInput=${set("systemPrompt")}></textarea>
        <fieldset class="builtins"><legend>Built-in tools (server-executed)</legend>
          ${[...new Set([...BUILTINS, ...draft.builtinTools])].map(
            (name) => html`<label class="check"><input type="checkbox" checked=${draft.builtinTools.includes(name)}
              onChange=${() => toggleBuiltin(name)} /> ${name}</label>`,
          )}
        </fieldset>
        <${ToolEditor} tools=${draft.tools} disabled=${readOnly} onChange=${(tools) => setDraft({ ...draft, tools })} />
        <label for="agent-mcp">MCP servers (JSON: [{"serverId", "allowedTools", "requireApproval"}])</label>
        <textarea id="agent-mcp" class="code" rows="3" value=${draft.mcpServers} onInput=${set("mcpServers")}></textarea>
        <label for="agent-metadata">Metadata (JSON object)</label>
        <textarea id="agent-metadata" class="code" rows="3" value=${draft.metadata} onInput=${set("metadata")}></textarea>
      </fieldset>
      ${problems.length > 0 && html`<ul class="problems" aria-live="polite">${problems.map((p) => html`<li>${p}</li>`)}</ul>`}
      <${ErrorBox} error=${saveError || error} />
      ${saved && html`<p class="ok" role="status">${saved}</p>`}
      ${!readOnly && html`<button type="submit" disabled=${problems.length > 0}>${creating ? "Create agent" : "Save"}</button>`}
    </form>
    ${!creating && agent && html`<${RevisionDiff} agentId=${id} current=${agent.revision} />`}
  <//>`;
}

