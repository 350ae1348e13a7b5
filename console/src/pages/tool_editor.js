// The function tools of an agent, each with its JSON Schema checked as you type.
// Ajv would be the library for this, but it compiles schemas with `new Function`,
// which the console's Content-Security-Policy (no 'unsafe-eval') forbids; the
// check here is the structural one OpenAI's function tools need.
import { html } from "../ui.js";

const TYPES = new Set(["object", "array", "string", "number", "integer", "boolean", "null"]);
const NAME = /^[a-zA-Z0-9_-]{1,64}$/;

function walk(schema, path, problems) {
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
    problems.push(`${path}: a schema must be an object`);
    return;
  }
  const types = Array.isArray(schema.type) ? schema.type : schema.type === undefined ? [] : [schema.type];
  for (const type of types) if (!TYPES.has(type)) problems.push(`${path}.type: unknown type "${type}"`);
  if (schema.properties !== undefined) {
    if (typeof schema.properties !== "object" || Array.isArray(schema.properties)) {
      problems.push(`${path}.properties: must be an object`);
    } else {
      for (const [name, sub] of Object.entries(schema.properties)) walk(sub, `${path}.properties.${name}`, problems);
    }
  }
  if (schema.required !== undefined) {
    if (!Array.isArray(schema.required) || schema.required.some((r) => typeof r !== "string")) {
      problems.push(`${path}.required: must be an array of strings`);
    } else if (schema.properties) {
      for (const name of schema.required)
        if (!(name in schema.properties)) problems.push(`${path}.required: "${name}" is not a property`);
    }
  }
  if (schema.items !== undefined) walk(schema.items, `${path}.items`, problems);
  if (schema.enum !== undefined && !Array.isArray(schema.enum)) problems.push(`${path}.enum: must be an array`);
}

/** Problems with a tool's parameters text: [] when it is a usable JSON Schema. */
export function schemaProblems(text) {
  if (!text.trim()) return [];
  let schema;
  try {
    schema = JSON.parse(text);
  } catch (error) {
    return [`not JSON: ${error.message}`];
  }
  const problems = [];
  walk(schema, "$", problems);
  if (!problems.length && schema.type !== undefined && schema.type !== "object")
    problems.push('$.type: a function\'s parameters must be of type "object"');
  return problems;
}

export const toolProblems = (tool) => [
  ...(NAME.test(tool.name) ? [] : ["name: 1 to 64 of [a-zA-Z0-9_-]"]),
  ...schemaProblems(tool.parameters),
];

/** Editor state <-> the API's Tool. */
export const toolToDraft = (tool) => ({
  name: tool.function?.name || "",
  description: tool.function?.description || "",
  parameters: tool.function?.parameters ? JSON.stringify(tool.function.parameters, null, 2) : "",
});
export const draftToTool = (draft) => ({
  type: "function",
  function: {
    name: draft.name,
    description: draft.description,
    ...(draft.parameters.trim() ? { parameters: JSON.parse(draft.parameters) } : {}),
  },
});

export function ToolEditor({ tools, onChange, disabled }) {
  const update = (index, field, value) => onChange(tools.map((t, i) => (i === index ? { ...t, [field]: value } : t)));
  const add = () =>
    onChange([...tools, { name: "", description: "", parameters: '{\n  "type": "object",\n  "properties": {}\n}' }]);
  return html`<fieldset class="tools">
    <legend>Function tools (client-executed)</legend>
    ${tools.map((tool, index) => {
      const problems = toolProblems(tool);
      const id = `tool-${index}`;
      return html`<div class="tool" key=${index}>
        <div class="row">
          <label for=${`${id}-name`}>Name</label>
          <input id=${`${id}-name`} value=${tool.name} disabled=${disabled}
            onInput=${(e) => update(index, "name", e.currentTarget.value)} />
          <label for=${`${id}-desc`}>Description</label>
          <input id=${`${id}-desc`} value=${tool.description} disabled=${disabled}
            onInput=${(e) => update(index, "description", e.currentTarget.value)} />
          ${!disabled && html`<button type="button" class="danger" onClick=${() => onChange(tools.filter((_, i) => i !== index))}>Remove</button>`}
        </div>
        <label for=${`${id}-params`}>Parameters (JSON Schema)</label>
        <textarea id=${`${id}-params`} class="code" rows="6" disabled=${disabled} spellcheck="false"
          aria-invalid=${problems.length ? "true" : "false"} aria-describedby=${`${id}-problems`}
          value=${tool.parameters} onInput=${(e) => update(index, "parameters", e.currentTarget.value)}></textarea>
        <ul id=${`${id}-problems`} class="problems" aria-live="polite">
          ${problems.map((p) => html`<li>${p}</li>`)}
        </ul>
      </div>`;
    })}
    ${!disabled && html`<button type="button" onClick=${add}>Add tool</button>`}
  </fieldset>`;
}
