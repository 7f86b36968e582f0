-- Rejected input is kept for its retention, not less: a purge takes only what is older than it.
begin;
select plan(5);

select email.record_rejected('invalid_json', 'pgtap-066 young', convert_to('{', 'UTF8'), 'pgtap-066-young');
select email.record_rejected('invalid_json', 'pgtap-066 old', convert_to('{', 'UTF8'), 'pgtap-066-old');
update email.rejected_messages set received_at = now() - interval '13 days' where delivery_id = 'pgtap-066-young';
update email.rejected_messages set received_at = now() - interval '15 days' where delivery_id = 'pgtap-066-old';

select email.record_rejected('invalid_json', 'pgtap-066 next', convert_to('{', 'UTF8'), 'pgtap-066-next');
select is((select count(*)::int from email.rejected_messages where delivery_id = 'pgtap-066-old'), 0,
  'a rejection 15 days old is purged by the next rejection (retention 14 days)');
select is((select count(*)::int from email.rejected_messages where delivery_id = 'pgtap-066-young'), 1,
  'one 13 days old is kept');

update email.rejected_messages set received_at = now() - interval '2 hours' where delivery_id = 'pgtap-066-next';
select ok(email.purge_rejected_messages('1 day') >= 1, 'purge_rejected_messages(1 day) deletes by age');
select is((select count(*)::int from email.rejected_messages where delivery_id = 'pgtap-066-young'), 0, 'the one 13 days old is gone now');
select is((select count(*)::int from email.rejected_messages where delivery_id = 'pgtap-066-next'), 1,
  'a rejection 2 hours old is kept');

select * from finish();
rollback;
