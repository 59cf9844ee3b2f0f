// The collector's live event debugger. Plain JavaScript, no framework, no network but the
// collector's own read API.
//
// Safety rule for this file: every value that comes from an event (or from the collector)
// reaches the page through textContent, createTextNode, an input's value or a class name from
// a fixed list. Never innerHTML, never an attribute that can run code. The page's
// Content-Security-Policy forbids inline script as a second line of defence.
"use strict";

(() => {
  const POLL_MS = 500; // new events show up within a second
  const HIDDEN_POLL_MS = 5000; // a background tab polls slowly
  const RETRY_MS = 2000; // after a failed request
  const SUMMARY_MS = 2000; // counts, the chart and a cleared store are noticed even when nothing arrives
  const PAGE = 1000; // the read API's largest page
  const KEEP = 2000; // rows kept in the page; older ones leave the list
  const MINUTES = 30;
  const PLAIN_JSON_CHARS = 200000; // bigger payloads are shown without colours (faster)
  const TYPES = ["identify", "track", "page", "screen", "group", "alias"];

  const state = {
    rows: [], // newest first: {event, tr, haystack, label, user}
    lastId: 0,
    selected: null,
    batches: new Map(),
    summaryAt: 0,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function typeClass(type) {
    return TYPES.includes(type) ? "t-" + type : "t-other";
  }

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return response.json();
  }

  // --- what a row shows --------------------------------------------------------------------------

  function labelOf(event) {
    const message = event.message || {};
    switch (event.type) {
      case "track":
        return text(message.event);
      case "page":
      case "screen":
        return text(message.name || message.category);
      case "group":
        return "group " + text(message.groupId);
      case "alias":
        return text(message.previousId) + " → " + text(message.userId);
      case "identify": {
        const traits = message.traits;
        return traits && typeof traits === "object" ? Object.keys(traits).sort().join(", ") : "";
      }
      default:
        return "";
    }
  }

  function text(value) {
    if (value === undefined || value === null) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function userOf(event) {
    if (event.user_id !== null && event.user_id !== undefined) return { id: event.user_id, anonymous: false };
    if (event.anonymous_id !== null && event.anonymous_id !== undefined) {
      return { id: event.anonymous_id, anonymous: true };
    }
    return { id: "", anonymous: false };
  }

  function plural(count, one, many) {
    return count + " " + (count === 1 ? one : many);
  }

  function badges(event) {
    const list = [];
    const warnings = event.warnings || [];
    const violations = event.violations || [];
    if (warnings.length) list.push(["badge warn", "⚠ " + plural(warnings.length, "warning", "warnings"), warnings.join("\n")]);
    if (event.duplicate) list.push(["badge dup", "duplicate", "This messageId was already received: Segment would drop this copy."]);
    if (violations.length) {
      list.push(["badge plan", "✕ " + plural(violations.length, "violation", "violations"), violations.join("\n")]);
    }
    return list;
  }

  function formatTime(iso) {
    const moment = new Date(iso);
    if (Number.isNaN(moment.getTime())) return text(iso);
    const pad = (n, width) => String(n).padStart(width, "0");
    return (
      pad(moment.getHours(), 2) + ":" + pad(moment.getMinutes(), 2) + ":" +
      pad(moment.getSeconds(), 2) + "." + pad(moment.getMilliseconds(), 3)
    );
  }

  function buildRow(event) {
    const label = labelOf(event);
    const user = userOf(event);
    const tr = el("tr", "row fresh");
    tr.tabIndex = 0;
    tr.dataset.id = String(event.id);
    tr.dataset.type = TYPES.includes(event.type) ? event.type : "other";

    const time = el("td", "c-time mono", formatTime(event.received_at));
    time.title = text(event.received_at);
    const typeCell = el("td", "c-type");
    typeCell.append(el("span", "type-pill " + typeClass(event.type), text(event.type) || "?"));
    const name = el("td", "c-name", label);
    name.title = label;
    const userCell = el("td", "c-user mono");
    if (user.anonymous) userCell.append(el("span", "anon", "anon "));
    userCell.append(document.createTextNode(text(user.id)));
    userCell.title = text(user.id);
    const flags = el("td", "c-flags");
    for (const [className, caption, detail] of badges(event)) {
      const badge = el("span", className, caption);
      badge.title = detail;
      flags.append(badge);
    }
    tr.append(time, typeCell, name, userCell, flags);
    tr.addEventListener("click", () => select(event.id));
    tr.addEventListener("keydown", (key) => {
      if (key.key === "Enter" || key.key === " ") {
        key.preventDefault();
        select(event.id);
      }
    });
    setTimeout(() => tr.classList.remove("fresh"), 1600);
    return {
      event,
      tr,
      label: label.toLowerCase(),
      users: [text(event.user_id), text(event.anonymous_id)].map((id) => id.toLowerCase()),
      haystack: JSON.stringify(event.message).toLowerCase(),
      flagged: badges(event).length > 0,
    };
  }

  // --- filters -------------------------------------------------------------------------------------

  function filters() {
    return {
      type: $("filter-type").value,
      user: $("filter-user").value.trim().toLowerCase(),
      event: $("filter-event").value.trim().toLowerCase(),
      text: $("filter-text").value.trim().toLowerCase(),
      flagged: $("filter-flagged").checked,
    };
  }

  function matches(row, wanted) {
    if (wanted.type && row.event.type !== wanted.type) return false;
    if (wanted.user && !row.users.some((id) => id.includes(wanted.user))) return false;
    if (wanted.event && !row.label.includes(wanted.event)) return false;
    if (wanted.text && !row.haystack.includes(wanted.text)) return false;
    if (wanted.flagged && !row.flagged) return false;
    return true;
  }

  function applyFilters() {
    const wanted = filters();
    let shown = 0;
    for (const row of state.rows) {
      const visible = matches(row, wanted);
      row.tr.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    const total = state.rows.length;
    $("shown").textContent = shown === total ? plural(total, "event", "events") : "Showing " + shown + " of " + total;
    $("empty").hidden = total > 0;
    $("no-match").hidden = total === 0 || shown > 0;
  }

  // --- live updates --------------------------------------------------------------------------------

  function addEvents(events) {
    // The API answers newest first; insert oldest first so the newest ends on top.
    const body = $("rows");
    const wanted = filters();
    for (let index = events.length - 1; index >= 0; index -= 1) {
      const event = events[index];
      if (event.id <= state.lastId) continue;
      const row = buildRow(event);
      row.tr.hidden = !matches(row, wanted);
      body.prepend(row.tr);
      state.rows.unshift(row);
      state.lastId = event.id;
    }
    while (state.rows.length > KEEP) state.rows.pop().tr.remove();
  }

  async function poll() {
    let delay = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    try {
      const page = await getJSON("/events?limit=" + PAGE + (state.lastId ? "&after_id=" + state.lastId : ""));
      const events = page.events || [];
      if (events.length) {
        if (state.lastId && page.total > events.length) {
          showNotice("More than " + PAGE + " events arrived at once; the list skipped older ones.");
        } else if (!state.lastId && page.total > events.length) {
          showNotice("Showing the newest " + events.length + " of " + page.total + " stored events.");
        }
        addEvents(events);
        applyFilters();
      }
      // While events flow the counts follow them, at most once a second.
      if (Date.now() - state.summaryAt > (events.length ? 1000 : SUMMARY_MS)) await refreshSummary();
      setStatus("live", "Live");
    } catch {
      setStatus("down", "Collector unreachable, retrying…");
      delay = RETRY_MS;
    }
    setTimeout(poll, delay);
  }

  function setStatus(kind, caption) {
    const status = $("status");
    status.className = "status " + kind;
    $("status-text").textContent = caption;
  }

  function showNotice(message) {
    const notice = $("notice");
    notice.textContent = message;
    notice.hidden = false;
  }

  function reset() {
    for (const row of state.rows) row.tr.remove();
    state.rows = [];
    state.lastId = 0;
    state.batches.clear();
    $("notice").hidden = true;
    closeDetail();
    applyFilters();
  }

  // --- summary strip -------------------------------------------------------------------------------

  async function refreshSummary() {
    const summary = await getJSON("/summary?minutes=" + MINUTES);
    state.summaryAt = Date.now();
    if (summary.total < state.rows.length || summary.last_id < state.lastId) {
      reset(); // the events were cleared, or another collector answers on this port: start over
    }
    $("total").textContent = summary.total.toLocaleString();
    $("total-warnings").textContent = summary.with_warnings.toLocaleString();
    $("total-duplicates").textContent = summary.duplicates.toLocaleString();
    $("total-violations").textContent = summary.with_violations.toLocaleString();
    drawTypes(summary.by_type || {});
    drawChart(summary.per_minute || []);
  }

  function drawTypes(byType) {
    const list = $("type-counts");
    const items = [];
    const kinds = TYPES.concat(Object.keys(byType).filter((kind) => !TYPES.includes(kind)).sort());
    for (const kind of kinds) {
      const count = byType[kind] || 0;
      const item = el("li", count ? "" : "zero");
      item.dataset.type = kind;
      item.append(el("span", "swatch " + typeClass(kind)), el("span", "type-name", kind), el("span", "count", count));
      items.push(item);
    }
    list.replaceChildren(...items);
  }

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  function drawChart(perMinute) {
    const chart = $("chart");
    const width = 360;
    const height = 64;
    const slot = width / Math.max(perMinute.length, 1);
    const busiest = Math.max(0, ...perMinute.map((minute) => minute.total));
    const peak = Math.max(1, busiest);
    const nodes = [svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "baseline" })];
    perMinute.forEach((minute, index) => {
      const group = svg("g", { class: "bar" });
      const title = document.createElementNS(SVG, "title");
      const parts = Object.entries(minute.by_type).map(([kind, count]) => kind + " " + count);
      title.textContent =
        formatTime(minute.minute).slice(0, 5) + " · " + plural(minute.total, "event", "events") +
        (parts.length ? " (" + parts.join(", ") + ")" : "");
      group.append(svg("rect", { x: index * slot, y: 0, width: slot, height, class: "hit" }), title);
      let top = height;
      const kinds = TYPES.concat(Object.keys(minute.by_type).filter((kind) => !TYPES.includes(kind)));
      for (const kind of kinds) {
        const count = minute.by_type[kind] || 0;
        if (!count) continue;
        const barHeight = (count / peak) * (height - 4);
        top -= barHeight;
        group.append(svg("rect", { x: index * slot + 1, y: top, width: Math.max(slot - 2, 1), height: barHeight, class: "seg " + typeClass(kind) }));
      }
      nodes.push(group);
    });
    chart.replaceChildren(...nodes);
    $("chart-max").textContent = "peak " + busiest + "/min";
  }

  // --- detail pane ---------------------------------------------------------------------------------

  function select(id) {
    const row = state.rows.find((candidate) => candidate.event.id === id);
    if (!row) return;
    if (state.selected) state.selected.tr.classList.remove("selected");
    state.selected = row;
    row.tr.classList.add("selected");
    showDetail(row.event);
  }

  function closeDetail() {
    if (state.selected) state.selected.tr.classList.remove("selected");
    state.selected = null;
    $("detail-body").hidden = true;
    $("detail-empty").hidden = false;
  }

  function showDetail(event) {
    $("detail-empty").hidden = true;
    $("detail-body").hidden = false;
    $("detail").scrollTop = 0; // a new event is read from its top
    const pill = $("d-type");
    pill.className = "type-pill " + typeClass(event.type);
    pill.textContent = text(event.type) || "?";
    $("d-title").textContent = labelOf(event) || "(no name)";

    const notes = [];
    for (const warning of event.warnings || []) notes.push(el("li", "note warn", warning));
    if (event.duplicate) {
      notes.push(el("li", "note dup", "Duplicate: this messageId was already received with this write key; Segment would drop this copy."));
    }
    for (const violation of event.violations || []) notes.push(el("li", "note plan", violation));
    const list = el("ul", "notes");
    list.append(...notes);
    $("d-flags").replaceChildren(...(notes.length ? [list] : []));

    const message = event.message || {};
    const meta = [
      ["messageId", event.message_id],
      ["userId", event.user_id],
      ["anonymousId", event.anonymous_id],
      ["received", event.received_at],
      ["timestamp", message.timestamp],
      ["batch", event.batch_id],
      ["write key", event.write_key_fingerprint],
    ];
    const items = [];
    for (const [name, value] of meta) {
      if (value === undefined || value === null || value === "") continue;
      items.push(el("dt", "", name), el("dd", "mono", text(value)));
    }
    $("d-meta").replaceChildren(...items);
    renderJSON($("d-payload"), message);
    showBatch(event);
  }

  async function showBatch(event) {
    const target = $("d-batch");
    const caption = $("d-batch-meta");
    let batch = state.batches.get(event.batch_id);
    if (!batch) {
      target.replaceChildren(el("span", "muted", "Loading…"));
      caption.textContent = "";
      try {
        batch = await getJSON("/batches/" + encodeURIComponent(event.batch_id));
        if (state.batches.size >= 50) state.batches.delete(state.batches.keys().next().value);
        state.batches.set(event.batch_id, batch);
      } catch {
        if (state.selected && state.selected.event === event) {
          target.replaceChildren(el("span", "muted", "The collector no longer holds this batch."));
        }
        return;
      }
    }
    if (!state.selected || state.selected.event !== event) return; // another row was picked meanwhile
    caption.textContent =
      "POST " + text(batch.path) + " · " + Number(batch.bytes).toLocaleString() + " bytes · " +
      plural(batch.messages_stored, "message", "messages");
    renderJSON(target, batch.body);
  }

  // Pretty JSON, coloured: the same text as JSON.stringify(value, null, 2), built from text nodes.
  function renderJSON(target, value) {
    const whole = JSON.stringify(value, null, 2);
    if (whole === undefined || whole.length > PLAIN_JSON_CHARS) {
      target.textContent = whole === undefined ? "" : whole;
      return;
    }
    const fragment = document.createDocumentFragment();
    appendJSON(fragment, value, 0);
    target.replaceChildren(fragment);
  }

  function appendJSON(parent, value, depth) {
    const add = (className, content) => parent.append(className ? el("span", className, content) : document.createTextNode(content));
    const indent = (level) => "  ".repeat(level);
    if (value === null) return add("j-null", "null");
    if (Array.isArray(value)) {
      if (!value.length) return add("", "[]");
      add("", "[\n");
      value.forEach((item, index) => {
        add("", indent(depth + 1));
        appendJSON(parent, item, depth + 1);
        add("", (index < value.length - 1 ? "," : "") + "\n");
      });
      return add("", indent(depth) + "]");
    }
    if (typeof value === "object") {
      const keys = Object.keys(value);
      if (!keys.length) return add("", "{}");
      add("", "{\n");
      keys.forEach((key, index) => {
        add("", indent(depth + 1));
        add("j-key", JSON.stringify(key));
        add("", ": ");
        appendJSON(parent, value[key], depth + 1);
        add("", (index < keys.length - 1 ? "," : "") + "\n");
      });
      return add("", indent(depth) + "}");
    }
    if (typeof value === "string") return add("j-str", JSON.stringify(value));
    if (typeof value === "number") return add("j-num", JSON.stringify(value));
    if (typeof value === "boolean") return add("j-bool", String(value));
    return add("", JSON.stringify(value));
  }

  async function copy(button, value) {
    const payload = JSON.stringify(value, null, 2);
    let copied = false;
    try {
      await navigator.clipboard.writeText(payload);
      copied = true;
    } catch {
      const area = el("textarea", "offscreen");
      area.value = payload;
      document.body.append(area);
      area.select();
      try {
        copied = document.execCommand("copy");
      } catch {
        copied = false;
      }
      area.remove();
    }
    button.textContent = copied ? "Copied" : "Copy failed";
    button.classList.toggle("done", copied);
    setTimeout(() => {
      button.textContent = "Copy JSON";
      button.classList.remove("done");
    }, 1500);
  }

  // --- wiring --------------------------------------------------------------------------------------

  function start() {
    const endpoint = "QUICKBOT_SEGMENT_ENDPOINT=" + window.location.origin;
    $("endpoint").textContent = endpoint;
    $("empty-endpoint").textContent = endpoint;
    for (const id of ["filter-user", "filter-event", "filter-text"]) $(id).addEventListener("input", applyFilters);
    for (const id of ["filter-type", "filter-flagged"]) $(id).addEventListener("change", applyFilters);
    $("d-close").addEventListener("click", closeDetail);
    document.addEventListener("keydown", (key) => {
      if (key.key === "Escape") closeDetail();
    });
    $("copy-payload").addEventListener("click", (click) => {
      if (state.selected) copy(click.currentTarget, state.selected.event.message);
    });
    $("copy-batch").addEventListener("click", (click) => {
      const batch = state.selected && state.batches.get(state.selected.event.batch_id);
      if (batch) copy(click.currentTarget, batch.body);
    });
    drawTypes({});
    drawChart([]);
    applyFilters();
    poll();
  }

  start();
})();
