/** The email-worker Edge Function: Deno.serve of the handler, built from the environment read once. */
import { ConfigError, loadConfig } from "../_shared/config.ts";
import { createLogger } from "../_shared/log.ts";
import { createMailer } from "../_shared/mailer.ts";
import { createServiceDb } from "../_shared/service_db.ts";
import { createStatusTracker } from "../_shared/tracker.ts";
import { createHandler } from "./handler.ts";

// A configuration error throws: on the Edge Runtime `Deno.exit` does nothing in a user worker, and
// a worker whose module throws at start is not served.
let config;
try {
  config = loadConfig(Deno.env.toObject());
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(
      JSON.stringify({ level: "error", component: "email-worker", action: "config", message: error.message }),
    );
  }
  throw error;
}
const logger = createLogger("email-worker", { level: config.logLevel });
const tracker = createStatusTracker(config.tracking, { logger: logger.child("tracker") });
const mailer = createMailer(config.smtp);
const sql = createServiceDb(config.tracking);

Deno.serve({ port: config.port }, createHandler({ config, tracker, mailer, logger, sql }));
