"""Operations glue: alerts and sinks, metrics, sd_notify, logs, arming, credentials,
postmortems, reports and plots."""
