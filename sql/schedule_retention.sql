-- Schedules the retention job (email.run_retention) with pg_cron. The migration
-- 20261129000100_email_retention.sql already did this where pg_cron was enabled when it ran (hosted
-- Supabase: enable pg_cron first and it is scheduled on the next `supabase db push`); run this file
-- when pg_cron was enabled afterwards. Re-runnable (cron.schedule with the same name replaces the job).
--
-- Every hour, a run deletes at most 100 batches of 10,000 finished deliveries past
-- email.settings.history_retention (90 days by default) and, once none is left before the cutoff,
-- drops the weekly event partitions past it and creates the next four weeks' partitions.
create extension if not exists pg_cron;
select cron.schedule('email-retention', '41 * * * *', $$select email.run_retention()$$);

-- Operator queries:
--   select * from email.retention_runs order by id desc limit 10;        -- what each run removed
--   select status, return_message, start_time, end_time from cron.job_run_details
--     where jobid = (select jobid from cron.job where jobname = 'email-retention') order by start_time desc limit 10;
--   update email.settings set history_retention = interval '180 days';  -- keep more (or less)
--   select cron.unschedule('email-retention');
