begin;
select plan(1);
select has_schema('email');
select * from finish();
rollback;
