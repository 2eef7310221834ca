import sys,os,numpy as np
from squeezegen import parse_model as P
from squeezegen.build import build
from squeezegen.reference import ReferenceExecutor as R
from squeezegen.codegen.tiles import ConvTile as T
from squeezegen.weights import check_weights
from squeezegen.ir.ops import source_specs
G=os.environ.get("GPU")
def W(g):
 r=np.random.default_rng(1);return{k:(r.uniform(.5,1.5,s) if k.endswith("var") else r.standard_normal(s)*(.3 if k.endswith("weight") else 1)).astype(np.float32) for k,s in source_specs(g).items()}
def M(sh,L,o):return P("name: t\ninput: {shape: %s}\nlayers:\n%s\noutput: %s\n"%(list(sh),"\n".join("  "+l.strip() for l in L.strip().splitlines()),o))
A="""- {name: c1, op: conv, out: 64, kernel: 3, pad: 1, relu: true}
- {name: b1, op: batchnorm}
- {name: c2, op: conv, out: 96, kernel: 3, pad: 1, relu: true}
- {name: p2, op: prelu}
- {name: c3, op: conv, out: 64, kernel: 3, pad: 1, relu: true}
- {name: q3, op: maxpool, kernel: 2, stride: 2}
- {name: a3, op: affine}
- {name: c4, op: conv, out: 256, kernel: 3, pad: 1}
- {name: s4, op: sigmoid}
- {name: b4, op: batchnorm}
- {name: d5, op: deconv, out: 64, kernel: 4, stride: 2, pad: 1}
- {name: r5, op: relu}
- {name: b5, op: batchnorm}
- {name: g, op: avgpool, global: true}
- {name: fc, op: linear, out: 40, relu: true}
- {name: bf, op: batchnorm}"""
B="""- {name: c0, op: conv, out: 12, kernel: 1}
- {name: sl, op: slice, channels: [2, 10]}
- {name: bsl, op: batchnorm}
- {name: sh, op: channel_shuffle, groups: 2}
- {name: psh, op: prelu}
- {name: ps, op: pixel_shuffle, factor: 2}
- {name: aps, op: affine}
- {name: up, op: resize, scale: 2, mode: nearest}
- {name: bup, op: batchnorm}
- {name: ap, op: avgpool, kernel: 3, stride: 2, pad: 1, count_include_pad: false}
- {name: bap, op: batchnorm}
- {name: se, op: avgpool, global: true}
- {name: m, op: mul, inputs: [bap, se]}
- {name: bm, op: batchnorm}"""
C="""- {name: x1, op: conv, out: 8, kernel: 1, relu: true}
- {name: e1, op: conv, out: 6, kernel: 1, relu: true, input: x1}
- {name: f1, op: batchnorm}
- {name: e2, op: conv, out: 5, kernel: 3, pad: 1, input: x1}
- {name: e2r, op: relu}
- {name: f2, op: prelu}
- {name: h, op: sigmoid, input: x1}
- {name: f3, op: affine}
- {name: k, op: maxpool, kernel: 3, stride: 1, pad: 1, input: x1}
- {name: f4, op: batchnorm}
- {name: cat, op: concat, inputs: [f1, f2, f3, f4]}
- {name: z, op: conv, out: 27, kernel: 1}
- {name: r, op: tanh, input: cat}
- {name: t, op: add, inputs: [r, z]}
- {name: bt, op: batchnorm}"""
wide={"c1":T(8,4,wide=True),"c3":T(8,4,wide=True),"c4":T(8,4,wide=True,splitk=2),"d5":T(2,2,bk=16,mma="tf32")}
runs=[(A,(16,24,24),"bf",32,"fp32",None),(A,(16,24,24),"bf",32,"tf32",None),(A,(16,24,24),"bf",32,"fp16",None),(A,(16,24,24),"bf",2,"fp16",None),(A,(16,24,24),"bf",2,"fp32",None),(A,(16,24,24),"bf",8,"tf32",wide),(B,(3,6,5),"bm",2,"fp32",None),(C,(4,7,6),"[bt, z]",3,"fp32",None),(C,(4,7,6),"[bt, z]",3,"fp16",None)]
bad=0
for i,(L,sh,o,n,pr,tl) in enumerate(runs):
 g=M(sh,L,o);w=W(g);x=np.random.default_rng(i).standard_normal((n,)+sh).astype(np.float32)
 res=build(g,n,precision=pr,tiles=tl)
 ks=[(k.name,k.template.split(".")[0]) for k in res.output.kernels]
 want=R(g,w)(x);want=want if isinstance(want,tuple) else (want,)
 if not G:print(i,ks);continue
 from squeezegen.runtime.network import Network
 with Network(res,check_weights(g,w)) as net:
  got=net(x)
 got=got if isinstance(got,tuple) else (got,)
 e=[float(np.abs(a-b).max()/np.abs(b).max()) for a,b in zip(got,want)]
 ok=max(e)<(1e-4 if pr=="fp32" else 1e-2);bad+=not ok
 print(i,pr,n,"OK" if ok else "FAIL",e,ks)
print("bad",bad)
