-- Schedules the email-worker sweep on Supabase: pg_cron calls POST /email-worker/sweep every 30 seconds
-- through pg_net. Not a migration, because it needs the function's URL and the sweep secret; both are
-- read from Vault at every run, so neither is written here nor into cron.job.
--
-- 1. Enable the extensions (Dashboard > Database > Extensions, or):
create extension if not exists pg_cron;
create extension if not exists pg_net with schema extensions;
create extension if not exists supabase_vault;

-- 2. Store the URL and the secret in Vault, once (the secret must equal the function's SWEEP_SECRET,
--    set with `supabase secrets set SWEEP_SECRET=...`). Run these by hand with your values:
--
--   select vault.create_secret('https://<project-ref>.supabase.co/functions/v1/email-worker/sweep',
--     'email_worker_sweep_url', 'URL of the email-worker sweep');
--   select vault.create_secret('<the SWEEP_SECRET value>', 'email_worker_sweep_secret',
--     'Bearer secret of the email-worker sweep');
--
--    To rotate: select vault.update_secret(id, '<new value>') from vault.secrets where name = '...';

-- 3. The schedule (cron.schedule with the same name replaces an existing job, so this is re-runnable).
select cron.schedule(
  'email-worker-sweep',
  '30 seconds',
  $$
  select net.http_post(
    url := (select decrypted_secret from vault.decrypted_secrets where name = 'email_worker_sweep_url'),
    headers := jsonb_build_object(
      'Content-Type', 'application/json',
      'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets where name = 'email_worker_sweep_secret')
    ),
    body := '{}'::jsonb,
    timeout_milliseconds := 25000
  )
  $$
);

-- 4. Rejected input past its retention (email.settings.rejected_message_retention, 14 days) is deleted
--    by every new rejection; this daily job covers quiet periods.
select cron.schedule('email-purge-rejected-messages', '23 3 * * *', $$select email.purge_rejected_messages()$$);

-- 5. The metric fold: every Prometheus scrape runs it; this job keeps the rollups behind email_api.metrics
--    and the dashboard current without Prometheus too (each run reads the audit events since the last,
--    at most 100,000 of them or 2 seconds: email.metric_state).
select cron.schedule('email-metrics-fold', '* * * * *', $$select email.fold_metric_events()$$);

-- Operator queries:
--   select * from cron.job where jobname = 'email-worker-sweep';
--   select status, return_message, start_time from cron.job_run_details
--     where jobid = (select jobid from cron.job where jobname = 'email-worker-sweep') order by start_time desc limit 10;
--   select status_code, content, created from net._http_response order by created desc limit 10;
--   select cron.unschedule('email-worker-sweep');
