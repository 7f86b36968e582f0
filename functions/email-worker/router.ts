/**
 * The email-worker's routes, one line each. Paths are the same on Supabase and locally
 * (`/email-worker/...`); a route's handler gets the request and the path's named groups.
 */
import { jsonError } from "../_shared/http.ts";

/** One route: method, URLPattern pathname, and its handler. */
export type Route = {
  method: string;
  path: string;
  handle: (request: Request, params: Record<string, string | undefined>) => Promise<Response> | Response;
};

/** Builds a request handler that dispatches to the first matching route (404/405 otherwise). */
export function createRouter(routes: Route[]): (request: Request) => Promise<Response> {
  const compiled = routes.map((r) => ({ ...r, pattern: new URLPattern({ pathname: r.path }) }));
  return async (request) => {
    const url = new URL(request.url);
    const matching = compiled.filter((r) => r.pattern.test({ pathname: url.pathname }));
    if (matching.length === 0) return jsonError(404, "not_found", `no route for ${url.pathname}`);
    const route = matching.find((r) => r.method === request.method);
    if (!route) {
      return jsonError(405, "method_not_allowed", `${request.method} is not allowed on ${url.pathname}`);
    }
    const params = route.pattern.exec({ pathname: url.pathname })?.pathname.groups ?? {};
    return await route.handle(request, params);
  };
}
