// storekeeper's service worker: shows the notifications the server pushes
// (failures and automatic restores only; the body is the same JSON a
// webhook receives).
self.addEventListener("push", (event) => {
  let n = {};
  try { n = event.data ? event.data.json() : {}; } catch (_) { n = { summary: event.data && event.data.text() }; }
  const title = "storekeeper: " + (n.type || "notification") + (n.store ? " on " + n.store : "");
  event.waitUntil(self.registration.showNotification(title, { body: n.summary || "", tag: n.id || undefined, data: n }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.openWindow("/"));
});
