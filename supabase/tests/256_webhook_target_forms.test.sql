-- More ways to write a target inside the network, each refused at registration: names under
-- .localhost (they resolve to loopback, RFC 6761), and addresses inside a network whose prefix does
-- not end on a byte boundary.
begin;
select plan(6);

select is(email.webhook_target_refusal('http://api.localhost/hook'), 'localhost', 'a name under .localhost is refused');
select is(email.webhook_target_refusal('https://a.b.LOCALHOST.:8443/'), 'localhost', 'in any case, with a trailing dot and a port');
select throws_ok($$select email.add_webhook_endpoint('http://hooks.localhost/')$$, 'EM007', null, 'registration refuses it');
select is(email.webhook_target_refusal('http://172.31.255.1/'), '172.31.255.1 is private', 'the end of 172.16.0.0/12 is refused');
select is(email.webhook_target_refusal('http://172.32.0.1/'), null, 'the address just after it is not');
select is(email.webhook_target_refusal('https://notlocalhost.example.com/'), null, 'a name that merely contains localhost is not');

select * from finish();
rollback;
