// editlab leaderboard: renders the embedded board (harness/report/merge.py) with vanilla DOM calls.
// Every value from the data goes through textContent, never innerHTML.
"use strict";
(function () {
  const board = JSON.parse(document.getElementById("leaderboard-data").textContent);
  const state = { method: "", model: "", gpu: "", release: false, sort: {} };  // sort: table id -> {key, asc}

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function fmt(x) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    const a = Math.abs(x);
    if (a >= 100) return x.toFixed(1);
    if (a >= 1) return x.toFixed(3);
    return x.toFixed(4);
  }

  const arrow = (m) => (m.direction === "higher" ? "↑" : m.direction === "lower" ? "↓" : "");
  const scaleLabel = (m) => (m.table_scale && m.table_scale !== 1 ? " ×" + m.table_scale : "");
  const headValue = (cell) => (cell && cell.entries.length ? cell.entries[0].mean : null);

  // ----------------------------------------------------------------------------------------- filters
  function fillSelect(id, values) {
    const select = document.getElementById(id);
    for (const v of [...new Set(values)].filter((v) => v).sort()) select.append(el("option", { value: v, text: v }));
    select.addEventListener("change", () => { state[id.replace("filter-", "")] = select.value; render(); });
  }
  const allRows = board.tables.flatMap((t) => t.rows);
  fillSelect("filter-method", allRows.map((r) => r.method));
  fillSelect("filter-model", allRows.map((r) => r.model || "(no model)"));
  fillSelect("filter-gpu", allRows.flatMap((r) => r.gpus));
  document.getElementById("filter-release").addEventListener("change", (e) => { state.release = e.target.checked; render(); });

  function visible(row) {
    if (state.method && row.method !== state.method) return false;
    if (state.model && (row.model || "(no model)") !== state.model) return false;
    if (state.gpu && !row.gpus.includes(state.gpu)) return false;
    if (state.release && row.reproduces_release !== true) return false;
    return true;
  }

  // -------------------------------------------------------------------------------------- the tables
  function sortedRows(table) {
    const rows = table.rows.filter(visible);
    const sort = state.sort[table.id];
    if (!sort) return rows;
    const value = (r) => (sort.key === "__label" ? r.label : headValue(r.cells[sort.key]));
    return rows.slice().sort((a, b) => {
      const va = value(a), vb = value(b);
      if (va === null || va === undefined) return 1;  // missing values last either way
      if (vb === null || vb === undefined) return -1;
      const c = typeof va === "string" ? va.localeCompare(vb) : va - vb;
      return sort.asc ? c : -c;
    });
  }

  function clickSort(table, key, metric) {
    const current = state.sort[table.id];
    const bestFirst = metric ? metric.direction !== "higher" : true;  // first click: best first
    state.sort[table.id] = current && current.key === key ? { key, asc: !current.asc } : { key, asc: bestFirst };
    render();
  }

  function bestValues(table, rows) {
    const best = {};
    for (const m of table.metrics) {
      const vals = rows.map((r) => headValue(r.cells[m.id])).filter((v) => v !== null && isFinite(v));
      if (vals.length > 1 && m.direction) best[m.id] = m.direction === "higher" ? Math.max(...vals) : Math.min(...vals);
    }
    return best;
  }

  function valueCell(table, row, metric, best) {
    const cell = row.cells[metric.id];
    const paper = row.paper[metric.id];
    const scale = metric.table_scale || 1;
    const td = el("td", { class: "value", "data-metric": metric.id, "data-row": row.id });
    if (cell && cell.entries.length) {
      const shown = cell.entries.map((e) => fmt(e.mean === null ? null : e.mean * scale));
      td.append(document.createTextNode(shown.join(" | ")));
      td.title = cell.entries.map((e) => {
        const ci = e.ci ? `95% CI [${fmt(e.ci[0] * scale)}, ${fmt(e.ci[1] * scale)}]` : "no interval";
        return `${fmt(e.mean * scale)}  ${ci}  n=${e.n} failed=${e.failed} nan=${e.nan}  (${e.runs.length} run${e.runs.length > 1 ? "s" : ""})`;
      }).join("\n") + (cell.conflict ? "\nCONFLICT: " + (cell.reasons || []).join("; ") : "");
      if (cell.conflict) td.classList.add("conflict");
      if (!cell.conflict && best[metric.id] !== undefined && headValue(cell) === best[metric.id]) td.classList.add("best");
    } else {
      td.append(el("span", { class: "empty", text: "–" }));
    }
    if (paper) {
      td.append(el("span", { class: "paper", text: `paper ${fmt(paper.value * scale)}${paper.unverified ? "†" : ""}` }));
      if (!td.title) td.title = `published ${fmt(paper.value * scale)}${paper.unverified ? " (unverified)" : ""}`;
    }
    td.addEventListener("click", () => showProvenance(table, row, metric, td));
    return td;
  }

  function renderTable(table) {
    const rows = sortedRows(table);
    const best = bestValues(table, rows);
    const sort = state.sort[table.id];
    const head = el("tr");
    const th = (text, key, metric, cls) => {
      const cell = el("th", { text, class: cls, "data-sort": key, "data-metric": metric ? metric.id : null });
      if (sort && sort.key === key) cell.classList.add(sort.asc ? "sorted-asc" : "sorted-desc");
      cell.addEventListener("click", () => clickSort(table, key, metric));
      return cell;
    };
    head.append(th("Method", "__label", null, "text"));
    head.append(el("th", { class: "text", text: "Model" }), el("th", { text: "Runs" }));
    for (const m of table.metrics) {
      const h = th(`${m.id}${scaleLabel(m)} ${arrow(m)}`, m.id, m, null);
      h.title = `${m.direction === "higher" ? "higher" : "lower"} is better; shown ×${m.table_scale || 1}` +
        (m.kind === "measurement" ? "; measured per run (machines differ), not compared across runs" : "");
      head.append(h);
    }
    const body = el("tbody");
    for (const row of rows) {
      const label = el("td", { class: "text" }, row.label);
      if (row.reproduces_release) label.append(el("span", { class: "tag release", text: "release", title: "config = the method's defaults (reproduce the released code)" }));
      if (row.runs.some((id) => board.runs[id] && board.runs[id].smoke)) label.append(el("span", { class: "tag smoke", text: "smoke" }));
      const tr = el("tr", { "data-row-id": row.id, "data-method": row.method, class: row.published_only ? "published-only" : null },
        label, el("td", { class: "text", text: row.model || "–" }), el("td", { text: String(row.runs.length) }));
      for (const m of table.metrics) tr.append(valueCell(table, row, m, best));
      body.append(tr);
    }
    const section = el("section", { "data-table": table.id },
      el("h2", { text: `${table.dataset} · ${table.protocol === "run" ? "run measurements" : "@" + table.protocol}` }),
      el("table", {}, el("thead", {}, head), body));
    if (!rows.length) section.append(el("p", { class: "empty", text: "No row matches the filters." }));
    return section;
  }

  function render() {
    const main = document.getElementById("tables");
    main.replaceChildren(...board.tables.map(renderTable));
  }

  // ---------------------------------------------------------------------------------- provenance
  function dl(pairs) {
    const list = el("dl");
    for (const [k, v] of pairs) {
      if (v === null || v === undefined || v === "") continue;
      list.append(el("dt", { text: k }), el("dd", {}, v instanceof Node ? v : String(v)));
    }
    return list;
  }
  const json = (obj) => el("pre", { text: JSON.stringify(obj, null, 1) });

  function runBlock(id) {
    const run = board.runs[id];
    if (!run) return el("p", { text: id });
    const gallery = run.gallery ? el("a", { href: run.gallery, text: "gallery (report.html)" }) : "no gallery page";
    const editlab = run.editlab || {};
    return el("div", { class: "run", "data-run": id }, el("h4", { text: `run ${id}` }), dl([
      ["date", run.date], ["editlab", `${editlab.version || "?"} @ ${(editlab.commit || "unknown").slice(0, 12)}${editlab.dirty ? " (dirty)" : ""}`],
      ["devices", (run.devices || []).map((d) => `${d.file}: ${d.gpu || d.cpu || "?"}`).join("; ")],
      ["shards", run.shards], ["seeds", JSON.stringify(run.seeds)],
      ["bootstrap", run.bootstrap ? `${run.bootstrap.resamples} resamples, ${run.bootstrap.method}, level ${run.bootstrap.level}` : null],
      ["libraries", Object.entries(run.versions || {}).map(([k, v]) => `${k} ${v}`).join(", ")],
      ["smoke", run.smoke ? (run.smoke_reasons || []).join("; ") : "no"],
      ["results file", run.source], ["gallery", gallery],
    ]));
  }

  function showProvenance(table, row, metric, td) {
    document.querySelectorAll("td.selected").forEach((n) => n.classList.remove("selected"));
    td.classList.add("selected");
    const scale = metric.table_scale || 1;
    const cell = row.cells[metric.id];
    const body = document.getElementById("provenance-body");
    const parts = [el("h3", { text: `${row.label} · ${metric.id}` }),
      dl([["dataset", table.dataset], ["protocol", table.protocol], ["direction", metric.direction === "higher" ? "↑ higher is better" : "↓ lower is better"],
        ["table scale", `×${scale}`], ["method", row.method], ["store key", row.method_key],
        ["reproduces release", row.reproduces_release === null ? "unknown" : row.reproduces_release ? "yes (defaults)" : "no"],
        ["model", row.model || "none"], ["dtype", row.dtype], ["weights", row.weights ? JSON.stringify(row.weights) : "no hashes recorded"],
        ["kernels", row.kernels ? JSON.stringify(row.kernels) : null]]),
      el("h4", { text: "method config" }), json(row.config)];
    if (cell && cell.conflict) parts.push(el("p", { class: "conflict-key", text: "Conflict: " + (cell.reasons || []).join("; ") }));
    for (const [i, e] of ((cell && cell.entries) || []).entries()) {
      parts.push(el("h4", { text: cell.entries.length > 1 ? `value ${i + 1} of ${cell.entries.length}` : "value" }), dl([
        ["mean", fmt(e.mean === null ? null : e.mean * scale)],
        ["95% interval", e.ci ? `[${fmt(e.ci[0] * scale)}, ${fmt(e.ci[1] * scale)}]` : "none (n < 2 or a set metric)"],
        ["n / failed / nan", `${e.n} / ${e.failed} / ${e.nan}`], ["metric version", e.version],
        ["edit seeds", (e.seeds || []).join(", ")], ["outputs sha256", (e.outputs_sha256 || []).map((h) => h.slice(0, 16)).join(", ")],
        ["smoke", (e.smoke || []).length ? e.smoke.join("; ") : "no"], ["runs", e.runs.join(", ")]]),
        el("h4", { text: "metric settings (feature networks)" }), json(e.settings));
    }
    const paper = row.paper[metric.id];
    if (paper) {
      parts.push(el("h4", { text: "published" }), dl([["value", `${fmt(paper.value * scale)}${paper.unverified ? " (unverified)" : ""}`],
        ["source", paper.source], ["note", paper.note], ["report spec", `${paper.spec} (row ${paper.spec_row})`]]));
    }
    for (const id of row.runs) parts.push(runBlock(id));
    body.replaceChildren(...parts);
    document.getElementById("provenance").hidden = false;
  }
  document.getElementById("provenance-close").addEventListener("click", () => { document.getElementById("provenance").hidden = true; });

  // -------------------------------------------------------------------------------------- header
  function list(id, items, summary) {
    if (!items.length) return;
    const box = document.getElementById(id);
    if (summary) box.querySelector("summary").textContent = summary;
    box.querySelector("ul").replaceChildren(...items.map((t) => el("li", { text: t })));
    box.hidden = false;
  }
  const nRuns = Object.keys(board.runs).length;
  document.getElementById("summary").textContent =
    `${nRuns} run${nRuns === 1 ? "" : "s"}, ${board.tables.length} table${board.tables.length === 1 ? "" : "s"}; generated ${board.generated_at}`;
  document.getElementById("smoke").hidden = !board.smoke;
  list("conflicts", board.conflicts, `${board.conflicts.length} conflicting cell${board.conflicts.length === 1 ? "" : "s"}`);
  list("notes", board.notes);
  render();
})();
