// The Segment block's form as a host renders it: RJSF 6 with its Ajv 8 validator on Ajv2020,
// default options, the shipped schema and uiSchema. The browser tests drive it through
// `window.harness`; nothing here changes how RJSF lays out, validates or saves the form.
import React from "react";
import { createRoot } from "react-dom/client";
import Form from "@rjsf/core";
import { customizeValidator } from "@rjsf/validator-ajv8";
import Ajv2020 from "ajv/dist/2020";
import addFormats from "ajv-formats";

const validator = customizeValidator({ AjvClass: Ajv2020 });

const state = { current: undefined, submitted: [], errors: null };
// What a host stores: JSON, where RJSF's `undefined` for a dropped or cleared field disappears.
const asSaved = (data) => (data === undefined ? undefined : JSON.parse(JSON.stringify(data)));
let root = null;

// The one line of host code the schema asks for (docs/host-integrators/editor-form.md): the
// `if` that picks the action's fields adds a generic 'must match "then" schema' beside the
// field's own error; it names no field, so it is dropped.
const dropActionRuleErrors = (errors) => errors.filter((error) => error.name !== "if");

function mount(schema, uiSchema, formData, { hostFilter = true } = {}) {
  state.current = formData;
  state.submitted = [];
  state.errors = null;
  const container = document.getElementById("app");
  if (root) root.unmount();
  container.replaceChildren();
  root = createRoot(container);
  root.render(
    <Form
      schema={schema}
      uiSchema={uiSchema}
      formData={formData}
      validator={validator}
      noHtml5Validate
      transformErrors={hostFilter ? dropActionRuleErrors : undefined}
      onChange={({ formData: changed }) => {
        state.current = asSaved(changed);
      }}
      onSubmit={({ formData: saved }) => {
        state.submitted.push(asSaved(saved));
        state.errors = [];
      }}
      onError={(errors) => {
        state.errors = errors.map(({ property, message, stack }) => ({ property, message, stack }));
      }}
    />,
  );
}

// Ajv's strict mode, as an editor that declares the schema's x- keywords would run it:
// returns null when the schema compiles, else Ajv's message.
function strictCompile(schema, keywords) {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  ajv.addVocabulary(keywords);
  try {
    ajv.compile(schema);
    return null;
  } catch (error) {
    return String(error.message);
  }
}

window.harness = { mount, strictCompile, state };
