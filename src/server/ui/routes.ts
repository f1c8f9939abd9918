import type { FastifyInstance } from "fastify";
import { pathOf } from "../app.js";
import type { ServerContext } from "../context.js";
import { registerAudit } from "./admin-audit.js";
import { registerCertificateDetail } from "./admin-certificate.js";
import { registerCertificateList } from "./admin-certificates.js";
import { requireAdmin } from "./admin-guard.js";
import { registerIssue } from "./admin-issue.js";
import { registerOverview } from "./admin-overview.js";
import { registerTokens } from "./admin-tokens.js";
import { registerAssets } from "./assets.js";
import { AuditVerifier } from "./audit-verifier.js";
import { registerCheck } from "./check.js";
import type { UiDeps } from "./deps.js";
import { OneTimeDownloads } from "./downloads.js";
import { registerEnroll } from "./enroll.js";
import { PageError, sendErrorPage } from "./error-page.js";
import { html } from "./html.js";
import { CsrfTokens } from "./security.js";

/**
 * The browser side of the API listener: the admin console (/admin…), the enrollment portal
 * (/enroll…), "check my certificate" (/check) and their static files (/ui/…). In a scope of their
 * own, so that their errors are pages rather than the API's JSON. The CSRF key and the one-time
 * downloads live as long as this app: a restart invalidates both.
 */
export function registerUiRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const downloads = new OneTimeDownloads(ctx.clock);
  app.addHook("onClose", async () => downloads.close());
  const deps: UiDeps = {
    ctx,
    csrf: new CsrfTokens(),
    downloads,
    auditVerifier: new AuditVerifier(ctx.ca.store, ctx.clock),
  };
  app.register(async (scope) => {
    scope.setErrorHandler((err, req, reply) =>
      sendErrorPage(req, reply, err, (e) =>
        ctx.logger.error({ reqId: req.id, path: pathOf(req), err: (e as Error)?.message }, "page failed"),
      ),
    );
    registerAssets(scope);
    registerOverview(scope, deps);
    registerCertificateList(scope, deps);
    registerCertificateDetail(scope, deps);
    registerIssue(scope, deps);
    registerTokens(scope, deps);
    registerAudit(scope, deps);
    registerEnroll(scope, deps);
    registerCheck(scope, deps);
    // Any other console address: a page in the console's look (after the same door), not API JSON.
    scope.get("/admin/*", async (req) => {
      await requireAdmin(req, ctx, deps.csrf);
      throw new PageError(
        "E_NOT_FOUND",
        404,
        "Not found",
        html`<h1>Not found</h1><p>The console has no page at this address.</p><p><a href="/admin">Back to the overview</a></p>`,
      );
    });
  });
}
