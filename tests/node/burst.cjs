// Sends a burst of track calls through Segment's own Node library (analytics-node) to the
// URL in COLLECTOR_URL, then prints what the library saw as one JSON line: how many HTTP
// requests it made (retries included) and every error it reported.
"use strict";

const { Analytics } = require("@segment/analytics-node");

async function main() {
  const host = process.env.COLLECTOR_URL;
  const count = Number(process.env.EVENTS || "2000");
  if (!host || !Number.isInteger(count) || count < 1) {
    throw new Error("set COLLECTOR_URL to the collector's URL and EVENTS to a whole number");
  }
  const analytics = new Analytics({ writeKey: process.env.WRITE_KEY || "wk_node_burst", host });
  let requests = 0;
  const errors = [];
  analytics.on("http_request", () => {
    requests += 1;
  });
  analytics.on("error", (error) => {
    errors.push(String((error && (error.reason || error.code)) || error));
  });
  const started = Date.now();
  for (let index = 0; index < count; index += 1) {
    analytics.track({
      userId: "user-" + (index % 50),
      event: "Burst Event",
      messageId: "burst-" + index,
      properties: { index },
    });
  }
  await analytics.closeAndFlush({ timeout: 120000 });
  console.log(JSON.stringify({ requests, errors, ms: Date.now() - started }));
}

main().catch((error) => {
  console.error(String((error && error.stack) || error));
  process.exit(1);
});
