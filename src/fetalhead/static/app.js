"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const fileInput = $("file"), drop = $("drop"), pixel = $("pixel"), token = $("token");
  const button = $("measure"), status = $("status"), result = $("result");
  const overlay = $("overlay"), plain = $("plain"), svg = $("edit"), numbers = $("numbers");
  const operator = $("operator"), reviewStatus = $("review-status");
  const tbody = document.querySelector("#table tbody"), csvButton = $("csv");
  const SVG = "http://www.w3.org/2000/svg";
  const rows = new Map(); // measurement id -> session row
  let chosen = null;
  let current = null; // {id, name, data, ai: ellipse, ellipse, px}

  const fmt = (v, d = 1) => (typeof v === "number" && isFinite(v) ? v.toFixed(d) : "–");

  // The same formulas as fetalhead.geometry.ellipse and fetalhead.gestation, for the live
  // display while a handle moves; the server recomputes every value that is recorded.
  const ramanujan = (a, b) => Math.PI * (3 * (a + b) - Math.sqrt((3 * a + b) * (a + 3 * b)));
  const hadlock = (hcMm) => { const c = hcMm / 10; return 8.96 + 0.54 * c + 0.0003 * c ** 3; };
  const intergrowth = (hcMm) =>
    Math.exp(0.0597 * Math.log(hcMm) ** 2 + 0.000000006409 * hcMm ** 3 + 3.3258) / 7;
  const weeksDays = (w) => {
    if (!isFinite(w) || w < 0) return "–";
    const d = Math.round(w * 7);
    return `${Math.floor(d / 7)}w${d % 7}d`;
  };

  function choose(file) {
    chosen = file || null;
    button.disabled = !chosen;
    status.className = "";
    status.textContent = chosen ? `Selected ${chosen.name}` : "";
  }
  fileInput.addEventListener("change", () => choose(fileInput.files[0]));
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => choose(e.dataTransfer.files[0]));

  function authHeaders(extra = {}) {
    return token.value ? { ...extra, Authorization: `Bearer ${token.value}` } : extra;
  }

  async function blobUrl(url) {
    const resp = await fetch(url, { headers: authHeaders() });
    return URL.createObjectURL(await resp.blob());
  }

  button.addEventListener("click", async () => {
    if (!chosen) return;
    const body = new FormData();
    body.append("file", chosen, chosen.name);
    if (pixel.value) body.append("pixel_size_mm", pixel.value);
    button.disabled = true;
    status.className = "";
    status.textContent = `Measuring ${chosen.name}…`;
    try {
      const resp = await fetch("/api/v1/measure", { method: "POST", body, headers: authHeaders() });
      const data = await resp.json();
      if (!resp.ok) throw new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
      await show(chosen.name, data);
      status.textContent = `Done: qc ${data.qc}`;
    } catch (err) {
      status.className = "error";
      status.textContent = `Error: ${err.message}`;
    } finally {
      button.disabled = !chosen;
    }
  });

  async function show(name, d) {
    overlay.src = await blobUrl(d.overlay_url);
    plain.src = await blobUrl(d.image_url);
    const [h, w] = d.image_shape || [1, 1];
    svg.setAttribute("viewBox", `-0.5 -0.5 ${w} ${h}`);
    current = { id: d.id, name, data: d, px: d.pixel_size_mm,
                ai: d.ellipse_px ? { ...d.ellipse_px } : null,
                ellipse: d.ellipse_px ? { ...d.ellipse_px } : null };
    result.hidden = false;
    reviewStatus.textContent = "";
    draw();
    upsertRow(d.id, {
      name, hc: d.hc_mm, bpd: d.bpd_mm, ofd: d.ofd_mm,
      gaH: (d.ga.hadlock_1984 || {}).weeks, gaI: (d.ga.intergrowth_21st || {}).weeks,
      source: "AI", decision: "pending", operator: "", time: "", qc: d.qc, sr: d.sr_url,
      ai: { hc: d.hc_mm, bpd: d.bpd_mm, ofd: d.ofd_mm }, data: d,
    });
  }

  function liveNumbers() {
    const d = current.data, e = current.ellipse, px = current.px;
    const hc = e && px ? ramanujan(e.a, e.b) * px : null;
    const bpd = e && px ? 2 * Math.min(e.a, e.b) * px : null;
    const ofd = e && px ? 2 * Math.max(e.a, e.b) * px : null;
    const interval = d.hc_interval_mm && !edited() ? ` (${fmt(d.hc_interval_mm[0])}–${fmt(d.hc_interval_mm[1])})` : "";
    const items = [
      ["HC", hc === null ? "–" : `${fmt(hc)} mm${interval}`],
      ["BPD", `${fmt(bpd)} mm`], ["OFD", `${fmt(ofd)} mm`],
      ["GA (Hadlock 1984)", hc === null ? "–" : weeksDays(hadlock(hc)) + gaSpread(d.ga_hadlock_2sd_weeks)],
      ["GA (INTERGROWTH-21st)", hc === null ? "–" : weeksDays(intergrowth(hc)) + gaSpread(d.ga_intergrowth_2sd_weeks)],
      ["Values", edited() ? "edited" : "AI"],
      ["Pixel size", `${fmt(px, 4)} mm (${d.pixel_size_source})`],
      ["QC", d.qc], ["Model", d.model_version],
    ];
    numbers.replaceChildren(...items.flatMap(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      if (k === "HC") dd.id = "hc-value";
      return [dt, dd];
    }));
  }

  // The AI's GA range (HC interval with the population's +/-2 SD); not for edits.
  function gaSpread(r) {
    return r && !edited() ? ` (${weeksDays(r[0])}–${weeksDays(r[1])}, ±2 SD)` : "";
  }

  function edited() {
    const a = current.ai, e = current.ellipse;
    if (!a || !e) return false;
    return ["cx", "cy", "a", "b", "angle"].some((k) => Math.abs(a[k] - e[k]) > 1e-6);
  }

  // --- the ellipse editor --------------------------------------------------------------
  function handlePoints(e) {
    const c = Math.cos(e.angle), s = Math.sin(e.angle);
    return {
      centre: [e.cx, e.cy],
      a: [e.cx + e.a * c, e.cy + e.a * s],
      b: [e.cx - e.b * s, e.cy + e.b * c],
      rotate: [e.cx - 1.15 * e.a * c, e.cy - 1.15 * e.a * s],
    };
  }

  function draw() {
    svg.replaceChildren();
    liveNumbers();
    const e = current.ellipse;
    if (!e) return;
    const [h, w] = current.data.image_shape;
    const r = Math.max(w, h) / 90;
    const el = document.createElementNS(SVG, "ellipse");
    Object.entries({ cx: e.cx, cy: e.cy, rx: e.a, ry: e.b, fill: "none",
      stroke: edited() ? "#ff9f1c" : "#ffe600", "stroke-width": r / 2.5,
      transform: `rotate(${(e.angle * 180) / Math.PI} ${e.cx} ${e.cy})` })
      .forEach(([k, v]) => el.setAttribute(k, v));
    svg.appendChild(el);
    const colours = { centre: "#ffffff", a: "#ffe600", b: "#00e5ff", rotate: "#ff3df5" };
    for (const [name, [x, y]] of Object.entries(handlePoints(e))) {
      const hd = document.createElementNS(SVG, "circle");
      Object.entries({ cx: x, cy: y, r, fill: colours[name], class: "handle",
        id: `handle-${name}`, "data-handle": name }).forEach(([k, v]) => hd.setAttribute(k, v));
      svg.appendChild(hd);
    }
  }

  function toImage(evt) {
    const pt = svg.createSVGPoint();
    pt.x = evt.clientX; pt.y = evt.clientY;
    const p = pt.matrixTransform(svg.getScreenCTM().inverse());
    return [p.x, p.y];
  }

  let dragging = null;
  svg.addEventListener("pointerdown", (evt) => {
    const name = evt.target.getAttribute && evt.target.getAttribute("data-handle");
    if (!name || !current || !current.ellipse) return;
    dragging = name;
    svg.setPointerCapture(evt.pointerId);
    evt.preventDefault();
  });
  svg.addEventListener("pointermove", (evt) => {
    if (!dragging) return;
    const e = current.ellipse, [x, y] = toImage(evt);
    const dx = x - e.cx, dy = y - e.cy;
    const c = Math.cos(e.angle), s = Math.sin(e.angle);
    if (dragging === "centre") { e.cx = x; e.cy = y; }
    else if (dragging === "a") e.a = Math.max(2, Math.abs(dx * c + dy * s));
    else if (dragging === "b") e.b = Math.max(2, Math.abs(-dx * s + dy * c));
    else if (dragging === "rotate") e.angle = Math.atan2(-dy, -dx);
    draw();
  });
  const stop = () => { dragging = null; };
  svg.addEventListener("pointerup", stop);
  svg.addEventListener("pointercancel", stop);

  $("reset").addEventListener("click", () => {
    if (!current || !current.ai) return;
    current.ellipse = { ...current.ai };
    reviewStatus.textContent = "Reset to the AI result.";
    draw();
  });

  async function decide(decision) {
    if (!current || !current.ellipse) return;
    if (!operator.value.trim()) {
      reviewStatus.className = "error";
      reviewStatus.textContent = "Enter the operator before accepting or rejecting.";
      return;
    }
    const resp = await fetch(current.data.review_url, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ ellipse: current.ellipse, decision, operator: operator.value.trim() }),
    });
    const r = await resp.json();
    if (!resp.ok) {
      reviewStatus.className = "error";
      reviewStatus.textContent = `Error: ${typeof r.detail === "string" ? r.detail : JSON.stringify(r.detail)}`;
      return;
    }
    reviewStatus.className = "";
    const sent = r.sent === true ? ", sent to the PACS" : r.sent === false ? `, not sent: ${r.send_error}` : "";
    reviewStatus.textContent = `${decision} by ${r.operator} at ${r.time}` + (r.sr_url ? ` — SR ready${sent}` : "");
    const row = rows.get(current.id);
    upsertRow(current.id, {
      ...row, hc: r.hc_mm, bpd: r.bpd_mm, ofd: r.ofd_mm,
      gaH: (r.ga.hadlock_1984 || {}).weeks, gaI: (r.ga.intergrowth_21st || {}).weeks,
      source: r.edited ? "edited" : "AI", decision, operator: r.operator, time: r.time,
      // The SR of a reviewed image is the one of its accepted values; none once rejected.
      sr: decision === "accepted" ? r.sr_url : null,
    });
  }
  $("accept").addEventListener("click", () => decide("accepted"));
  $("reject").addEventListener("click", () => decide("rejected"));

  // --- the session table and its CSV ---------------------------------------------------
  function upsertRow(id, row) {
    rows.set(id, row);
    let tr = document.getElementById(`row-${id}`);
    if (!tr) {
      tr = document.createElement("tr");
      tr.id = `row-${id}`;
      tbody.appendChild(tr);
    }
    const cells = [row.name, fmt(row.hc), fmt(row.bpd), fmt(row.ofd), weeksDays(row.gaH),
                   weeksDays(row.gaI), row.source, row.decision, row.operator, row.time, row.qc];
    tr.replaceChildren(...cells.map((v) => { const td = document.createElement("td"); td.textContent = v; return td; }));
    const td = document.createElement("td");
    if (row.sr) {
      const a = document.createElement("a");
      a.textContent = "SR"; a.href = "#"; a.className = "sr-link";
      a.addEventListener("click", async (ev) => {
        ev.preventDefault();
        const link = document.createElement("a");
        link.href = await blobUrl(row.sr);
        link.download = `${row.name.replace(/\.[^.]*$/, "")}_sr.dcm`;
        link.click();
      });
      td.appendChild(a);
    }
    tr.appendChild(td);
    csvButton.disabled = false;
  }

  csvButton.addEventListener("click", () => {
    const header = ["filename", "decision", "values", "operator", "time_utc", "hc_mm", "bpd_mm",
      "ofd_mm", "ga_weeks_hadlock", "ga_weeks_intergrowth", "ai_hc_mm", "ai_bpd_mm", "ai_ofd_mm",
      "pixel_size_mm", "pixel_size_source", "qc"];
    const out = [...rows.values()].map((r) => [r.name, r.decision, r.source, r.operator, r.time,
      fmt(r.hc, 2), fmt(r.bpd, 2), fmt(r.ofd, 2), fmt(r.gaH, 2), fmt(r.gaI, 2), fmt(r.ai.hc, 2),
      fmt(r.ai.bpd, 2), fmt(r.ai.ofd, 2), fmt(r.data.pixel_size_mm, 5),
      r.data.pixel_size_source || "", r.qc]);
    const quote = (v) => `"${String(v).replace(/"/g, '""')}"`;
    const text = [header, ...out].map((r) => r.map(quote).join(",")).join("\n") + "\n";
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    a.download = "fetalhead_measurements.csv";
    a.click();
  });
})();
