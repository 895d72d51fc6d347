package tusk.minidfs;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.DFSTestUtil;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.MiniDFSNNTopology;
import org.apache.hadoop.hdfs.protocol.LocatedBlock;

/**
 * Starts a MiniDFSCluster on free ports, prints one line
 * {@code Ready! hdfs=PORT http=PORT [conf=DIR]} on stdout, then obeys commands, one per line
 * on stdin, each answered by one line ({@code ok ...} or {@code error ...}). An empty line, or
 * stdin closing (the parent going away), shuts the cluster down.
 *
 * <p>Arguments: [dataNodes] (default 1) [blockSize] (default 1 MiB) [ha] ("ha": two NameNodes
 * in nameservice {@code ns1}, nn1 active; {@code conf=DIR} is then a client HADOOP_CONF_DIR
 * naming both, and {@code hdfs=} is nn1's port).
 *
 * <p>Commands, for fault tests:
 *
 * <ul>
 *   <li>{@code stop-datanode I}: stop DataNode I (its JVM threads; the NameNode notices later);
 *   <li>{@code datanodes PATH}: the DataNode indexes holding the first block of PATH;
 *   <li>{@code corrupt PATH I|all}: flip bytes in every block file of PATH on DataNode I (or
 *       on all of them), behind the DataNode's back;
 *   <li>{@code stop-namenode I} / {@code restart-namenode I}: stop, or start again on the same
 *       ports;
 *   <li>{@code failover FROM TO}: NameNode FROM to standby, then TO to active.
 * </ul>
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    int dataNodes = args.length > 0 && !args[0].isEmpty() ? Integer.parseInt(args[0]) : 1;
    java.util.List<String> flags = java.util.Arrays.asList(args).subList(Math.min(2, args.length), args.length);
    boolean ha = flags.contains("ha");
    // "slow-dead": the NameNode declares a DataNode dead after HDFS's default 10 minutes, as
    // on a real cluster, so a writer must route around a dead DataNode on its own.
    boolean slowDead = flags.contains("slow-dead");
    File base = Files.createTempDirectory("tusk-minidfs").toFile();
    Configuration conf = new Configuration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.getAbsolutePath());
    // Tests write as whatever user runs them; permissions would only get in the way.
    conf.setBoolean(DFSConfigKeys.DFS_PERMISSIONS_ENABLED_KEY, false);
    conf.setBoolean("dfs.webhdfs.enabled", true);
    conf.set(DFSConfigKeys.DFS_NAMENODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
    conf.set(DFSConfigKeys.DFS_DATANODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
    conf.setInt(DFSConfigKeys.DFS_REPLICATION_KEY, Math.min(dataNodes, 3));
    // 1 MB blocks by default so that tests exercise multi-block files; a second argument
    // sets another size (benchmarks use HDFS's own default, 128 MB).
    long blockSize = args.length > 1 && !args[1].isEmpty() ? Long.parseLong(args[1]) : 1024 * 1024;
    conf.setLong(DFSConfigKeys.DFS_BLOCK_SIZE_KEY, blockSize);
    conf.setLong(DFSConfigKeys.DFS_NAMENODE_MIN_BLOCK_SIZE_KEY, 1024);
    if (dataNodes > 1) {
      // A stopped DataNode is declared dead within seconds, not HDFS's ten minutes, so that
      // fault tests see the NameNode route around it.
      conf.setLong(DFSConfigKeys.DFS_HEARTBEAT_INTERVAL_KEY, 1);
      if (!slowDead) {
        conf.setInt(DFSConfigKeys.DFS_NAMENODE_HEARTBEAT_RECHECK_INTERVAL_KEY, 2000);
      }
    }

    MiniDFSCluster.Builder builder = new MiniDFSCluster.Builder(conf).numDataNodes(dataNodes);
    if (ha) {
      builder.nnTopology(
          new MiniDFSNNTopology()
              .addNameservice(
                  new MiniDFSNNTopology.NSConf("ns1")
                      .addNN(new MiniDFSNNTopology.NNConf("nn1"))
                      .addNN(new MiniDFSNNTopology.NNConf("nn2"))));
    } else {
      builder.nameNodePort(0);
    }
    MiniDFSCluster cluster = builder.build();
    if (ha) {
      cluster.transitionToActive(0);
    }
    cluster.waitActive();
    int rpc = cluster.getNameNodePort(0);
    int http = cluster.getNameNode(0).getHttpAddress().getPort();
    String ready = "Ready! hdfs=" + rpc + " http=" + http;
    if (ha) {
      ready += " conf=" + writeClientConf(cluster, base);
    }
    System.out.println(ready);
    System.out.flush();

    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        cluster.shutdown(true);
      } catch (Throwable t) {
        // best effort on the way out
      }
    }));
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintWriter out = new PrintWriter(System.out, true);
    String line;
    while ((line = in.readLine()) != null && !line.trim().isEmpty()) {
      try {
        out.println("ok " + command(cluster, line.trim().split("\\s+"), ha));
      } catch (Throwable t) {
        out.println("error " + t.toString().replace('\n', ' '));
      }
    }
    cluster.shutdown(true);
    System.exit(0);
  }

  private static String command(MiniDFSCluster cluster, String[] w, boolean ha) throws Exception {
    switch (w[0]) {
      case "stop-datanode": {
        if (cluster.stopDataNode(Integer.parseInt(w[1])) == null) {
          throw new IllegalArgumentException("no DataNode " + w[1]);
        }
        return "";
      }
      case "datanodes": {
        LocatedBlock first = blocks(cluster, w[1]).get(0);
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < cluster.getDataNodes().size(); i++) {
          if (cluster.getBlockFile(i, first.getBlock()) != null) {
            sb.append(i).append(' ');
          }
        }
        return sb.toString().trim();
      }
      case "corrupt": {
        int n = 0;
        for (LocatedBlock b : blocks(cluster, w[1])) {
          for (int i = 0; i < cluster.getDataNodes().size(); i++) {
            if (w[2].equals("all") || Integer.parseInt(w[2]) == i) {
              File f = cluster.getBlockFile(i, b.getBlock());
              if (f != null) {
                flip(f);
                n++;
              }
            }
          }
        }
        if (n == 0) {
          throw new IllegalArgumentException("no block files of " + w[1] + " on " + w[2]);
        }
        return Integer.toString(n);
      }
      case "stop-namenode":
        cluster.shutdownNameNode(Integer.parseInt(w[1]));
        return "";
      case "restart-namenode": {
        int i = Integer.parseInt(w[1]);
        cluster.restartNameNode(i, false);
        return "";
      }
      case "failover": {
        if (!ha) {
          throw new IllegalStateException("not an HA cluster");
        }
        cluster.transitionToStandby(Integer.parseInt(w[1]));
        cluster.transitionToActive(Integer.parseInt(w[2]));
        return "";
      }
      default:
        throw new IllegalArgumentException("unknown command " + w[0]);
    }
  }

  private static List<LocatedBlock> blocks(MiniDFSCluster cluster, String path) throws Exception {
    FileSystem fs = cluster.getFileSystem(activeIndex(cluster));
    return DFSTestUtil.getAllBlocks(fs, new Path(path));
  }

  private static int activeIndex(MiniDFSCluster cluster) {
    for (int i = 0; i < cluster.getNumNameNodes(); i++) {
      if (cluster.isNameNodeUp(i) && cluster.getNameNode(i).isActiveState()) {
        return i;
      }
    }
    return 0;
  }

  /** Invert a few bytes in the middle of a block file; its checksum file stays as it was. */
  private static void flip(File f) throws Exception {
    byte[] data = Files.readAllBytes(f.toPath());
    for (int i = data.length / 2; i < Math.min(data.length, data.length / 2 + 16); i++) {
      data[i] = (byte) ~data[i];
    }
    Files.write(f.toPath(), data);
  }

  /** A client configuration naming the nameservice {@code ns1} and both of its NameNodes. */
  private static String writeClientConf(MiniDFSCluster cluster, File base) throws Exception {
    File dir = new File(base, "client-conf");
    dir.mkdirs();
    StringBuilder hdfs = new StringBuilder("<?xml version=\"1.0\"?>\n<configuration>\n");
    prop(hdfs, "dfs.nameservices", "ns1");
    prop(hdfs, "dfs.ha.namenodes.ns1", "nn1,nn2");
    for (int i = 0; i < 2; i++) {
      InetSocketAddress a = cluster.getNameNode(i).getNameNodeAddress();
      prop(hdfs, "dfs.namenode.rpc-address.ns1.nn" + (i + 1), "127.0.0.1:" + a.getPort());
    }
    prop(hdfs, "dfs.client.failover.proxy.provider.ns1",
        "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider");
    hdfs.append("</configuration>\n");
    Files.write(new File(dir, "hdfs-site.xml").toPath(), hdfs.toString().getBytes(StandardCharsets.UTF_8));
    StringBuilder core = new StringBuilder("<?xml version=\"1.0\"?>\n<configuration>\n");
    prop(core, "fs.defaultFS", "hdfs://ns1");
    core.append("</configuration>\n");
    Files.write(new File(dir, "core-site.xml").toPath(), core.toString().getBytes(StandardCharsets.UTF_8));
    return dir.getAbsolutePath();
  }

  private static void prop(StringBuilder sb, String name, String value) {
    sb.append("  <property><name>").append(name).append("</name><value>").append(value)
        .append("</value></property>\n");
  }
}
