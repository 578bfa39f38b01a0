"use strict";
(function () {
  const fileInput = document.getElementById("file");
  const drop = document.getElementById("drop");
  const pixel = document.getElementById("pixel");
  const token = document.getElementById("token");
  const button = document.getElementById("measure");
  const status = document.getElementById("status");
  const result = document.getElementById("result");
  const overlay = document.getElementById("overlay");
  const numbers = document.getElementById("numbers");
  const tbody = document.querySelector("#table tbody");
  const csvButton = document.getElementById("csv");
  const rows = [];
  let chosen = null;

  const fmt = (v, d = 1) => (typeof v === "number" && isFinite(v) ? v.toFixed(d) : "–");

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

  function authHeaders() {
    return token.value ? { Authorization: `Bearer ${token.value}` } : {};
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
      show(chosen.name, data);
      status.textContent = `Done: qc ${data.qc}`;
    } catch (err) {
      status.className = "error";
      status.textContent = `Error: ${err.message}`;
    } finally {
      button.disabled = !chosen;
    }
  });

  async function show(name, d) {
    const resp = await fetch(d.overlay_url, { headers: authHeaders() });
    overlay.src = URL.createObjectURL(await resp.blob());
    const h = d.ga.hadlock_1984 || {}, ig = d.ga.intergrowth_21st || {};
    const flag = (g) => (g.weeks === undefined ? "" : g.in_range ? "" : " (outside validity range)");
    const items = [
      ["HC", `${fmt(d.hc_mm)} mm`],
      ["HC interval", d.hc_interval_mm ? `${fmt(d.hc_interval_mm[0])} to ${fmt(d.hc_interval_mm[1])} mm (calibrated, ${Math.round(100 * d.hc_interval_level)} %)` : "not calibrated"], ["BPD", `${fmt(d.bpd_mm)} mm`], ["OFD", `${fmt(d.ofd_mm)} mm`],
      ["GA (Hadlock 1984)", `${h.weeks_days || "-"}${flag(h)}`],
      ["GA (INTERGROWTH-21st)", `${ig.weeks_days || "-"}${flag(ig)}`],
      ["Pixel size", `${fmt(d.pixel_size_mm, 4)} mm (${d.pixel_size_source})`],
      ["QC", d.qc], ["Model", d.model_version],
    ];
    numbers.replaceChildren(...items.flatMap(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      if (k === "HC") dd.id = "hc-value";
      return [dt, dd];
    }));
    result.hidden = false;
    // The CSV keeps decimal weeks; the table shows weeks+days, as clinicians read them.
    const row = [name, fmt(d.hc_mm), fmt(d.bpd_mm), fmt(d.ofd_mm), fmt(h.weeks, 2), fmt(ig.weeks, 2),
                 fmt(d.pixel_size_mm, 4), d.pixel_size_source || "", d.qc];
    rows.push(row);
    const shown = [...row];
    shown[4] = h.weeks_days || "-";
    shown[5] = ig.weeks_days || "-";
    const tr = document.createElement("tr");
    shown.forEach((v) => { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); });
    tbody.appendChild(tr);
    csvButton.disabled = false;
  }

  csvButton.addEventListener("click", () => {
    const header = ["filename", "hc_mm", "bpd_mm", "ofd_mm", "ga_weeks_hadlock", "ga_weeks_intergrowth",
                    "pixel_size_mm", "pixel_size_source", "qc"];
    const quote = (v) => `"${String(v).replace(/"/g, '""')}"`;
    const text = [header, ...rows].map((r) => r.map(quote).join(",")).join("\n") + "\n";
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    a.download = "fetalhead_measurements.csv";
    a.click();
  });
})();
