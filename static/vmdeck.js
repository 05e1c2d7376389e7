// Progressive enhancement only: every page works without this file.
// "Select all" for the bulk action form on the VM list.
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (!all) return;
  const boxes = () => document.querySelectorAll('input[type=checkbox][name=vm][form=bulk]');
  all.hidden = false;
  all.addEventListener("change", () => boxes().forEach((b) => { b.checked = all.checked; }));
});
