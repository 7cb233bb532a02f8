/* libmosquitto (Debian: libmosquitto-dev) for the MQTT Swift target.
 * mqtt_protocol.h brings the MQTT_PROP_* property identifiers and MQTT_RC_* reason codes. */
#ifndef SWARM_GATEWAY_CMOSQUITTO_SHIM_H
#define SWARM_GATEWAY_CMOSQUITTO_SHIM_H

#include <mosquitto.h>
#include <mqtt_protocol.h>

/* EmbeddedBroker spawns mosquitto with posix_spawn and must not leak the parent's descriptors
 * (client sockets of libmosquitto are not close-on-exec) into the broker. glibc >= 2.34 has
 * posix_spawn_file_actions_addclosefrom_np, but declares it only under _GNU_SOURCE, which Swift's
 * Glibc module does not define; declare it here (same prototype as glibc's spawn.h). */
#include <spawn.h>
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *file_actions, int from);

#endif
