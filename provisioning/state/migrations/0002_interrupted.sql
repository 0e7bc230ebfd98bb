-- Environments whose server the platform took away (a reclaimed spot instance).
alter table devdb.environments drop constraint environments_state_check;
alter table devdb.environments add constraint environments_state_check
    check (state in ('provisioning', 'ready', 'destroying', 'destroyed', 'failed', 'interrupted'));
