// mpwatch review console: writes go to the JSON API; nothing here builds HTML from data.
"use strict";
(function () {
  const TOKEN = "mpwatch.token";
  const ANALYST = "mpwatch.analyst";
  const FLASH = "mpwatch.flash";

  function show(element, text, kind) {
    if (!element) { return; }
    element.textContent = text;
    element.className = "status " + kind;
  }

  function analyst() {
    const field = document.getElementById("analyst");
    const name = field ? field.value.trim() : "";
    return name || "console";
  }

  async function post(path, body) {
    const headers = { "Content-Type": "application/json", "Accept": "application/json" };
    const token = sessionStorage.getItem(TOKEN);
    if (token) { headers["Authorization"] = "Bearer " + token; }
    const response = await fetch(path, {
      method: "POST", headers: headers, body: JSON.stringify(body),
      credentials: "omit", cache: "no-store", redirect: "error",
    });
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) {
      const message = data && data.error ? data.error : response.status + " " + response.statusText;
      if (response.status === 401) {
        throw new Error("the daemon needs its write token: enter it at the top of the page ("
          + message + ")");
      }
      throw new Error(message);
    }
    return data;
  }

  function setUpIdentity() {
    const name = document.getElementById("analyst");
    if (name) {
      name.value = localStorage.getItem(ANALYST) || "";
      name.addEventListener("change", function () { localStorage.setItem(ANALYST, name.value.trim()); });
    }
    const field = document.getElementById("token");
    const state = document.getElementById("token-state");
    if (!field) { return; }
    function refresh() {
      if (!state) { return; }
      state.textContent = sessionStorage.getItem(TOKEN) ? "token set for this tab" : "no token set";
    }
    document.getElementById("token-save").addEventListener("click", function () {
      const value = field.value.trim();
      if (value) { sessionStorage.setItem(TOKEN, value); } else { sessionStorage.removeItem(TOKEN); }
      field.value = "";
      refresh();
    });
    document.getElementById("token-forget").addEventListener("click", function () {
      sessionStorage.removeItem(TOKEN);
      refresh();
    });
    field.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { document.getElementById("token-save").click(); }
    });
    refresh();
  }

  function describe(outcome) {
    const all = outcome.result_ids && outcome.result_ids.length > 1
      ? "All " + outcome.result_ids.length + " spectra " : "";
    if (outcome.kind === "unchanged") { return outcome.note || "Nothing changed."; }
    if (outcome.kind === "rejected") { return all ? all + "rejected." : "Rejected."; }
    let text = (all ? all + "confirmed" : "Confirmed") + " as " + outcome.label;
    if (outcome.kind === "new_class") { text += ": a new class"; }
    if (outcome.kind === "positive") { text += " (it was already known; library unchanged)"; }
    text += ". Library version " + outcome.library_version + ", model " + outcome.model_version + ".";
    if (outcome.reviews_resolved) {
      text += " " + outcome.reviews_resolved + " other open reviews are now known.";
    }
    if (outcome.note) { text += " Note: " + outcome.note + "."; }  // e.g. a spectrum that looks like another class
    return text;
  }

  // A review card (article.review) decides one result; a cluster card (article.cluster) all of
  // its results at once, and the single cards of those results on the page are marked with it.
  function setUpDecisions(selector, send) {
    document.querySelectorAll(selector).forEach(function (card) {
      const status = card.querySelector("[data-role=status]");
      const input = card.querySelector("[data-role=new-label]");
      const buttons = card.querySelectorAll("button[data-action]");

      async function decide(body) {
        buttons.forEach(function (b) { b.disabled = true; });
        show(status, "Sending…", "busy");
        try {
          const outcome = await send(card, Object.assign({ decided_by: analyst() }, body));
          show(status, describe(outcome), "ok");
          card.classList.add("decided");
          card.dataset.decided = outcome.kind;
          (outcome.result_ids || []).forEach(function (resultId) {
            const single = document.getElementById("review-" + resultId);
            if (single && single !== card) {
              single.classList.add("decided");
              show(single.querySelector("[data-role=status]"),
                "Decided with cluster " + card.dataset.clusterId + ".", "ok");
            }
          });
        } catch (error) {
          show(status, "Not saved: " + error.message, "error");
          buttons.forEach(function (b) { b.disabled = false; });
        }
      }

      buttons.forEach(function (button) {
        button.addEventListener("click", function () {
          const action = button.dataset.action;
          if (action === "confirm") {
            decide({ label: button.dataset.label });
          } else if (action === "confirm-new") {
            const label = input.value.trim();
            if (!label) { show(status, "Type the new label first.", "error"); input.focus(); return; }
            decide({ label: label });
          } else if (action === "reject") {
            decide({ reject: true });
          }
        });
      });
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter") { card.querySelector("button[data-action=confirm-new]").click(); }
      });
    });
  }

  function setUpReviews() {
    setUpDecisions("article.review", function (card, body) {
      const which = card.dataset.particleId
        ? { particle_id: Number(card.dataset.particleId) }
        : { result_id: Number(card.dataset.resultId) };
      return post("/api/confirm", Object.assign(which, body));
    });
    setUpDecisions("article.cluster", function (card, body) {
      return post("/api/clusters/" + encodeURIComponent(card.dataset.clusterId) + "/confirm", body);
    });
  }

  function setUpRollback() {
    const status = document.getElementById("library-status");
    document.querySelectorAll("button[data-action=rollback]").forEach(function (button) {
      button.addEventListener("click", async function () {
        const version = Number(button.dataset.version);
        if (!window.confirm("Make library version " + version + " current again?\n\n"
            + "It becomes a new version; the daemon serves it at once.")) { return; }
        button.disabled = true;
        show(status, "Rolling back…", "busy");
        try {
          const outcome = await post("/api/library/rollback", { version: version });
          sessionStorage.setItem(FLASH, "Version " + outcome.restored + " restored as library version "
            + outcome.library_version + " (model " + outcome.model_version + ").");
          window.location.reload();
        } catch (error) {
          show(status, "Not rolled back: " + error.message, "error");
          button.disabled = false;
        }
      });
    });
  }

  function showFlash() {
    const message = sessionStorage.getItem(FLASH);
    if (message) {
      sessionStorage.removeItem(FLASH);
      show(document.getElementById("flash"), message, "ok");
    }
  }

  showFlash();
  setUpIdentity();
  setUpReviews();
  setUpRollback();
})();
