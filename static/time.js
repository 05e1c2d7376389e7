// Progressive enhancement only: without this file every time stays as the server wrote it,
// in UTC. The server writes times as <time datetime="2026-11-30T10:00:00Z">…UTC</time>; this
// shows them in the browser's own zone, with the UTC text kept as the hover title. Times in
// rows refreshed in place later (static/live.js) are converted as they arrive.
// The date inputs are not converted: they are labelled UTC and send UTC.
(() => {
  const pad = (n) => String(n).padStart(2, "0");
  const zoneName = (d) => {
    try {
      const part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
        .formatToParts(d)
        .find((p) => p.type === "timeZoneName");
      return part ? part.value : "";
    } catch (e) {
      return "";
    }
  };
  const local = (d) =>
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zoneName(d)}`.trim();
  const convert = (root) => {
    if (!root.querySelectorAll) return;
    const found = Array.from(root.querySelectorAll("time[datetime$='Z']"));
    if (root.matches && root.matches("time[datetime$='Z']")) found.push(root);
    for (const t of found) {
      if (t.dataset.local) continue;
      const d = new Date(t.dateTime);
      if (Number.isNaN(d.getTime())) continue;
      t.title = t.textContent.trim();
      t.textContent = local(d);
      t.dataset.local = "1";
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    convert(document);
    new MutationObserver((changes) => {
      for (const c of changes) c.addedNodes.forEach(convert);
    }).observe(document.body, { childList: true, subtree: true });
  });
})();
