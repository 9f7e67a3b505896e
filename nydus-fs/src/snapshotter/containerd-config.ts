// What containerd needs to use the snapshotter: the proxy plugin (type "snapshot", the
// socket), and for Kubernetes the CRI plugin's snapshotter with snapshot annotations on, so
// that the CRI plugin passes the image reference and layer digests as snapshot labels.
// Printed by `nydus-fs snapshotter --print-containerd-config` (config version 2, containerd 1.6).

export function containerdConfig(options: { socket: string; pluginName: string }): string {
  return [
    '# containerd configuration for the Naiad snapshotter (merge into /etc/containerd/config.toml,',
    '# then restart containerd). Pull with `ctr-remote image rpull --snapshotter NAME REF` and run',
    '# with `ctr run --snapshotter NAME`; Kubernetes uses it through the CRI plugin below.',
    'version = 2',
    '',
    '[proxy_plugins]',
    `  [proxy_plugins.${options.pluginName}]`,
    '    type = "snapshot"',
    `    address = ${JSON.stringify(options.socket)}`,
    '',
    '[plugins."io.containerd.grpc.v1.cri".containerd]',
    `  snapshotter = ${JSON.stringify(options.pluginName)}`,
    '  # The CRI plugin passes the image reference and layer digests to the snapshotter only with this.',
    '  disable_snapshot_annotations = false',
    ''
  ].join('\n')
}
