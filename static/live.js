// Pages that stay current: the VM list and the VM page refresh their changing parts in place
// from an HTML fragment (the page's `#live` element names it in `data-href`), keeping what the
// user is doing: ticked boxes, typed text, chosen options, an open <details> menu, focus and
// scroll position. Progressive enhancement only: without this file the page is complete and its
// "Refresh" link reloads it.
//
// When it asks (the fragment's `#live` carries the hint):
// - every `data-pending-poll-ms` (3 s) while something on this page settles (a power request
//   on a VM it shows, a host not polled yet), starting one second after the page loads;
// - otherwise every `data-poll-ms` (the server's poll interval: nothing can change faster);
// - never when `data-poll-ms` is 0 (nothing on the page can change), and never while the tab is
//   hidden: it asks again as soon as the tab is shown.
// Each request sends the last fragment's ETag; an unchanged page costs a 304 with no body.

const SWAPPED = ["host-banners", "vm-count", "vm-rows", "vm-live-head"];

const live = document.getElementById("live");
if (live && live.dataset.href) start(live);

function start(live) {
  const stamp = document.getElementById("live-stamp");
  let etag = null;
  let pending = live.dataset.pending === "true";
  let pollMs = Number(live.dataset.pollMs) || 0;
  const pendingMs = Number(live.dataset.pendingPollMs) || 3000;
  let timer = null;
  let last = Date.now();
  let stopped = false;

  const say = (text, title) => {
    if (!stamp) return;
    stamp.textContent = text;
    if (title !== undefined) stamp.title = title;
  };
  const schedule = (ms) => {
    clearTimeout(timer);
    timer = null;
    if (stopped || document.visibilityState === "hidden") return;
    const next = ms ?? (pending ? pendingMs : pollMs);
    if (next > 0 || ms === 0) timer = setTimeout(refresh, next);
  };

  let inflight = false;
  async function refresh() {
    timer = null;
    if (inflight) return;
    inflight = true;
    try {
      await ask();
    } finally {
      inflight = false;
    }
  }

  async function ask() {
    let res;
    try {
      const headers = etag ? { "If-None-Match": etag } : {};
      res = await fetch(live.dataset.href, { headers, credentials: "same-origin", cache: "no-store" });
    } catch (_) {
      say("Could not refresh (no answer); trying again.");
      return schedule(Math.max(pollMs, pendingMs));
    }
    if (res.status === 304) {
      last = Date.now();
      tick();
      return schedule();
    }
    const html = res.ok ? await res.text() : "";
    const doc = new DOMParser().parseFromString(html, "text/html");
    const fresh = doc.getElementById("live");
    // A redirect to the login page (session ended) or an error: stop, say so, keep the page.
    if (res.redirected || !fresh) {
      stopped = true;
      say(res.status >= 400 ? `Not refreshing: the server answered ${res.status}.` : "Not refreshing: log in again.");
      return;
    }
    etag = res.headers.get("ETag");
    swap(doc);
    pending = fresh.dataset.pending === "true";
    pollMs = Number(fresh.dataset.pollMs) || 0;
    last = Date.now();
    say("Updated just now.", fresh.dataset.generated ? `Data as of ${fresh.dataset.generated}` : undefined);
    schedule();
  }

  const tick = () => {
    const s = Math.round((Date.now() - last) / 1000);
    if (!stopped) say(s < 5 ? "Updated just now." : `Updated ${s} s ago.`);
  };
  setInterval(() => { if (document.visibilityState !== "hidden") tick(); }, 5000);

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") {
      clearTimeout(timer);
      timer = null;
    } else if (!stopped && timer === null && !inflight && (pending || pollMs > 0)) {
      schedule(0);
    }
  });
  // Soon after the page loads when something settles (the page after a power action).
  schedule(pending ? 1000 : undefined);
}

// Replaces each swapped part present in both the page and the fragment, then puts back the
// state of the form controls inside them (by name and value, or id), open menus and focus.
// Where both hold the same rows ([data-uuid]) in the same order, only the rows that changed are
// replaced, so a row the user is working on is left alone unless its VM changed.
function swap(doc) {
  const x = window.scrollX, y = window.scrollY;
  for (const id of SWAPPED) {
    const mine = document.getElementById(id);
    const theirs = doc.getElementById(id);
    if (!mine || !theirs) continue;
    const rows = (el) => [...el.children].filter((r) => r.dataset && r.dataset.uuid);
    const old = rows(mine), fresh = rows(theirs);
    const same = old.length > 0 && old.length === mine.children.length && old.length === fresh.length
      && fresh.length === theirs.children.length
      && old.every((r, i) => r.dataset.uuid === fresh[i].dataset.uuid);
    const parts = same ? old.map((r, i) => [r, fresh[i]]) : [[mine, theirs]];
    for (const [a, b] of parts) {
      if (a.innerHTML === b.innerHTML && a.className === b.className) continue;
      const kept = remember(a);
      a.innerHTML = b.innerHTML;
      a.className = b.className;
      restore(a, kept);
    }
  }
  window.scrollTo(x, y);
}

// A stable name for an element inside a swapped part: its id, or its row plus its name/value
// (checkboxes, buttons), or its row plus its position among the row's <details>.
function keyOf(el) {
  if (el.id) return `#${el.id}`;
  const row = el.closest("[data-uuid]");
  const where = row ? row.dataset.uuid : "";
  if (el.tagName === "DETAILS") {
    const all = row ? [...row.querySelectorAll("details")] : [];
    return `${where} details ${all.indexOf(el)}`;
  }
  const what = el.getAttribute("formaction") || el.getAttribute("href") || "";
  return `${where} ${el.tagName} ${el.name || ""}=${el.value || ""} ${what}`;
}

function remember(root) {
  const checked = new Set();
  root.querySelectorAll("input[type=checkbox]").forEach((b) => { if (b.checked) checked.add(keyOf(b)); });
  const open = new Set();
  root.querySelectorAll("details[open]").forEach((d) => open.add(keyOf(d)));
  const active = document.activeElement;
  const focus = active && root.contains(active) ? keyOf(active) : null;
  return { checked, open, focus };
}

function restore(root, kept) {
  root.querySelectorAll("input[type=checkbox]").forEach((b) => { b.checked = kept.checked.has(keyOf(b)); });
  root.querySelectorAll("details").forEach((d) => { if (kept.open.has(keyOf(d))) d.open = true; });
  if (kept.focus) {
    const again = [...root.querySelectorAll("a, button, input, select, summary, [tabindex]")]
      .find((el) => keyOf(el) === kept.focus);
    if (again) again.focus({ preventScroll: true });
  }
}
